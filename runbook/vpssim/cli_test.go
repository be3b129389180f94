package vpssim

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// --dir is honoured before and after the command word; nothing here needs
// a sim (status of an empty dir fails naming it), and nothing is created.
func TestMainFlagOrder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nosim")
	for _, args := range [][]string{{"status", "--dir", dir}, {"--dir", dir, "status"}, {"--dir=" + dir, "status"}} {
		var out, errb bytes.Buffer
		code := Main(args, &out, &errb)
		if code == 0 || !strings.Contains(out.String()+errb.String(), dir) {
			t.Errorf("vps-sim %q: exit %d, output does not name %s:\n%s%s", args, code, dir, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"status", "--bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "-bogus") {
		t.Errorf("unknown flag: exit %d, %q", code, errb.String())
	}
}
