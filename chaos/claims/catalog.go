package claims

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// GenerateCommand regenerates CLAIMS.md; the drift test names it.
const GenerateCommand = "go run ./chaos/claims/gen"

// CatalogFile is the catalog's path from the repository root.
const CatalogFile = "CLAIMS.md"

// specLabel is how a spec labels itself with a claim (specs.Claim).
var specLabel = regexp.MustCompile(`Claim\("` + regexp.QuoteMeta(LabelPrefix) + `([A-Za-z0-9_-]+)"\)`)

// SpecFiles maps each claim id to the files under root/specs whose specs
// carry its label, as sorted slash paths relative to root.
func SpecFiles(root string) (map[string][]string, error) {
	paths, err := filepath.Glob(filepath.Join(root, "specs", "*.go"))
	if err != nil {
		return nil, fmt.Errorf("list spec files: %w", err)
	}
	sort.Strings(paths)
	out := map[string][]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read spec file: %w", err)
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil, fmt.Errorf("spec file %s: %w", p, err)
		}
		rel = filepath.ToSlash(rel)
		for _, m := range specLabel.FindAllSubmatch(b, -1) {
			id := string(m[1])
			if !slices.Contains(out[id], rel) {
				out[id] = append(out[id], rel)
			}
		}
	}
	return out, nil
}

// Catalog renders CLAIMS.md from All and the spec files carrying each
// claim. The output depends only on its inputs, so regenerating an
// unchanged registry changes nothing.
func Catalog(specs map[string][]string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<!-- Generated from chaos/claims by %[1]s. DO NOT EDIT. -->
# Runbook claims → specs

This file is generated from the claim registry in `+"`chaos/claims/claims.go`"+`
and the specs that label themselves with each claim. Regenerate it from the
repository root with `+"`%[1]s`"+`; `+"`go test ./chaos/claims`"+` fails
when it drifts from the registry.

Each row is one claim the runbook makes. Its spec carries the Ginkgo label
`+"`claim:<id>`"+` and must pass on the targets marked "yes": `+"`inproc`"+` (three
in-process nodes, `+"`make specs`"+`), `+"`process`"+` (real membershipd subprocesses:
SIGKILL, SIGSTOP, power loss; `+"`make chaos`"+`) and `+"`ssh`"+` (the simulated hosts,
`+"`make test-vps`"+`, and a deployed cluster, `+"`make specs-live`"+`). A claim is proven only by a spec
that would fail if the claim were false: it observes the cluster from outside
(health endpoint, a real client, the CLI's exit status and output).

| id | claim | inproc | process | ssh | spec |
|---|---|---|---|---|---|
`, GenerateCommand)
	for _, c := range All {
		files := "—"
		if fs := specs[c.ID]; len(fs) > 0 {
			files = "`" + strings.Join(fs, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", c.ID, cell(c.Summary), yes(c.InProc), yes(c.Process), yes(c.SSH), files)
	}
	return b.Bytes()
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "—"
}

// cell keeps a summary inside its table cell.
func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}
