package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteBenchNullsAndFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bench")
	v := 2.5
	tab := BenchTable{Rows: []BenchRow{{Name: "a", Unit: "ms", Membershipd: &v}}}
	if err := WriteBench(dir, tab, map[string][]byte{"x.svg": []byte("<svg/>")}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, BenchFile))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string][]map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	row := got["rows"][0]
	for _, k := range []string{"plain", "ratio"} {
		if v, ok := row[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	if row["membershipd"] != 2.5 || row["name"] != "a" || row["unit"] != "ms" {
		t.Errorf("row = %v", row)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x.svg")); err != nil || string(b) != "<svg/>" {
		t.Errorf("x.svg = %q, %v", b, err)
	}
	if err := WriteBench(dir, tab, map[string][]byte{"../escape.svg": nil}); err == nil {
		t.Error("a file name with a path was accepted")
	}
	var buf bytes.Buffer
	if err := WriteBenchText(&buf, tab); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "null") || !strings.Contains(buf.String(), "2.50") {
		t.Errorf("text table:\n%s", buf.String())
	}
}
