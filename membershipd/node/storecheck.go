package node

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// checkStoreDir refuses a JetStream store that holds a control-plane stream
// the cluster's meta layer cannot know: the old loopback bootstrap (a
// standalone server writing KV_UNIBUS_users into the seed node's store
// before the cluster ever ran) leaves exactly that. nats-server 2.15.2
// restores such a stream from disk and later takes it as this node's
// replica of the cluster's own stream of the same name, so the seed
// shadows acknowledged writes whenever this node leads it.
//
// On disk (nats-server 2.15.2), under <store>/jetstream/: streams live in
// <account>/streams/<name>/ whether written standalone or clustered; a
// clustered server keeps its meta layer's raft log in $SYS/_js_/_meta_/,
// created on its first clustered start. The rule: a control-plane stream
// dir (KV_UNIBUS_*) in a store with no meta dir at all was written by a
// standalone server, so it is refused. A store that did run clustered is
// trusted: telling a stream the meta snapshot lacks from one it has would
// mean parsing the raft log.
func checkStoreDir(cfg *Config) error {
	if cfg.Store != StoreKV {
		return nil
	}
	js := filepath.Join(cfg.StoreDir, "jetstream")
	meta, err := filepath.Glob(filepath.Join(js, "*", "_js_", "_meta_"))
	if err != nil {
		return fmt.Errorf("check store dir %s: %w", cfg.StoreDir, err)
	}
	if len(meta) > 0 {
		return nil
	}
	found, err := filepath.Glob(filepath.Join(js, "*", "streams", "KV_UNIBUS_*"))
	if err != nil {
		return fmt.Errorf("check store dir %s: %w", cfg.StoreDir, err)
	}
	var dirs []string
	for _, f := range found {
		if fi, err := os.Stat(f); err == nil && fi.IsDir() {
			dirs = append(dirs, f)
		}
	}
	if len(dirs) == 0 {
		return nil
	}
	sort.Strings(dirs)
	names := make([]string, len(dirs))
	quoted := make([]string, len(dirs))
	for i, d := range dirs {
		names[i] = filepath.Base(d)
		quoted[i] = "'" + d + "'" // the account dir is $G: keep the shell off it
	}
	return configErr("--nats-store %s holds control-plane stream %s written by a standalone server (no JetStream meta layer in %s): the cluster would never know it and it would shadow acknowledged writes; "+
		"move it out of the store (mv %s /var/tmp/), start the node, and seed users through the live cluster (`membershipd user add --store kv`)",
		cfg.StoreDir, strings.Join(names, ", "), js, strings.Join(quoted, " "))
}
