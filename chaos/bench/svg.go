package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// colors of the two clusters in every chart.
var colors = map[string]string{"membershipd": "#1f77b4", "plain": "#ff7f0e"}

// SVG draws the run's charts in one image, no dependencies: left the
// publish-to-receive latency CDF of both clusters, right the failover
// receive gap per fault (bars, log scale).
func (res Result) SVG() []byte {
	const w, h, pad = 960, 400, 50
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	res.cdf(&b, pad, pad, w/2-2*pad, h-2*pad)
	res.gapBars(&b, w/2+pad, pad, w/2-2*pad, h-2*pad)
	b.WriteString("</svg>\n")
	return []byte(b.String())
}

func axes(b *strings.Builder, x, y, w, h int, title, xl, yl string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", x, y-20, title)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x, y+h, x+w, y+h)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", x, y, x, y+h)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+w/2, y+h+35, xl)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" transform="rotate(-90 %d %d)">%s</text>`+"\n", x-35, y+h/2, x-35, y+h/2, yl)
}

func (res Result) cdf(b *strings.Builder, x, y, w, h int) {
	axes(b, x, y, w, h, "publish → receive latency (CDF, log scale)", "ms", "fraction")
	// Log x axis, whole decades from below the fastest to above the
	// slowest message: the body (about a millisecond) and the tail (up to
	// seconds under load) both stay readable.
	lo, hi := math.Inf(1), 0.0
	for _, l := range res.Latency {
		if len(l) > 0 {
			lo, hi = math.Min(lo, ms(l[0])), math.Max(hi, ms(l[len(l)-1]))
		}
	}
	if hi == 0 {
		fmt.Fprintf(b, `<text x="%d" y="%d">no latency data</text>`+"\n", x+10, y+h/2)
		return
	}
	d0 := math.Floor(math.Log10(math.Max(lo, 0.001)))
	d1 := math.Max(math.Ceil(math.Log10(hi)), d0+1)
	px := func(v float64) float64 {
		return float64(x) + float64(w)*(math.Log10(math.Max(v, 0.001))-d0)/(d1-d0)
	}
	for d := d0; d <= d1; d++ {
		tx := px(math.Pow(10, d))
		fmt.Fprintf(b, `<text x="%.0f" y="%d" text-anchor="middle">%g</text>`+"\n", tx, y+h+15, math.Pow(10, d))
		fmt.Fprintf(b, `<line x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="#eee"/>`+"\n", tx, y, tx, y+h)
	}
	for i := 0; i <= 4; i++ {
		fy := y + h - h*i/4
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%.2f</text>`+"\n", x-5, fy+4, float64(i)/4)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", x, fy, x+w, fy)
	}
	row := 0
	for _, name := range []string{"membershipd", "plain"} {
		l := res.Latency[name]
		if len(l) == 0 {
			continue
		}
		pts := make([]string, 0, len(l))
		for i, d := range l {
			py := float64(y+h) - float64(h)*float64(i+1)/float64(len(l))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(ms(d)), py))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", colors[name], strings.Join(pts, " "))
		legend(b, x+10, y+15+row*18, name, fmt.Sprintf("p50 %.2f  p99 %.2f ms", ms(pct(l, 50)), ms(pct(l, 99))))
		row++
	}
}

func legend(b *strings.Builder, x, y int, name, extra string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/>`+"\n", x, y-9, colors[name])
	fmt.Fprintf(b, `<text x="%d" y="%d">%s %s</text>`+"\n", x+14, y, name, extra)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (res Result) gapBars(b *strings.Builder, x, y, w, h int) {
	axes(b, x, y, w, h, "failover receive gap per fault (log scale)", "fault", "ms")
	faults := []fault{faultStop, faultKill, faultLeaderKill}
	// Log scale from 1 ms to the next power of ten above the largest gap.
	top := 1.0
	for _, g := range res.Gaps {
		for _, d := range g {
			top = max(top, ms(d))
		}
	}
	decades := math.Ceil(math.Log10(top))
	if decades < 1 {
		decades = 1
	}
	scale := func(v float64) int {
		if v < 1 {
			v = 1
		}
		return int(float64(h) * math.Log10(v) / decades)
	}
	for i := 0; i <= int(decades); i++ {
		fy := y + h - int(float64(h)*float64(i)/decades)
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ddd"/>`+"\n", x, fy, x+w, fy)
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%g</text>`+"\n", x-5, fy+4, math.Pow(10, float64(i)))
	}
	group := w / len(faults)
	for gi, fl := range faults {
		gx := x + gi*group
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", gx+group/2, y+h+15, fl)
		for ci, name := range []string{"membershipd", "plain"} {
			d, ok := res.Gaps[fl][name]
			if !ok {
				continue
			}
			bh := scale(ms(d))
			bx := gx + group/6 + ci*group/3
			fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", bx, y+h-bh, group/3-4, bh, colors[name])
			fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="middle" font-size="10">%.0f</text>`+"\n", bx+group/6-2, y+h-bh-3, ms(d))
		}
	}
	legend(b, x+w-120, y+10, "membershipd", "")
	legend(b, x+w-120, y+28, "plain", "")
}
