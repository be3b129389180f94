package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ClusterValidity is the lifetime of everything MintCluster creates.
const ClusterValidity = 365 * 24 * time.Hour

// Common names of the CAs and operator cert minted by MintCluster.
const (
	ClientCACommonName = "clusterkit client CA"
	RouteCACommonName  = "clusterkit route CA"
	OperatorCommonName = "operator"
)

// NodeSpec names a node and the hosts (IPs or DNS names) it is reached by.
type NodeSpec struct {
	Name  string
	Hosts []string
}

// Layout is the on-disk location of all cluster TLS material.
type Layout struct {
	Dir                       string
	ClientCACert, ClientCAKey string
	RouteCACert, RouteCAKey   string
	RouteSecret               string
	OperatorCert, OperatorKey string
	Nodes                     map[string]NodeFiles
}

// NodeFiles are one node's server (data plane) and route cert/key paths.
type NodeFiles struct {
	ServerCert, ServerKey, RouteCert, RouteKey string
}

// LayoutFor returns the file paths for dir and nodeNames without touching
// disk, so tools can locate material minted earlier.
func LayoutFor(dir string, nodeNames []string) *Layout {
	l := &Layout{
		Dir:          dir,
		ClientCACert: filepath.Join(dir, "client-ca.crt"),
		ClientCAKey:  filepath.Join(dir, "client-ca.key"),
		RouteCACert:  filepath.Join(dir, "route-ca.crt"),
		RouteCAKey:   filepath.Join(dir, "route-ca.key"),
		RouteSecret:  filepath.Join(dir, "cluster.pass"),
		OperatorCert: filepath.Join(dir, "operator.crt"),
		OperatorKey:  filepath.Join(dir, "operator.key"),
		Nodes:        make(map[string]NodeFiles, len(nodeNames)),
	}
	for _, n := range nodeNames {
		nd := filepath.Join(dir, n)
		l.Nodes[n] = NodeFiles{
			ServerCert: filepath.Join(nd, "server.crt"),
			ServerKey:  filepath.Join(nd, "server.key"),
			RouteCert:  filepath.Join(nd, "route.crt"),
			RouteKey:   filepath.Join(nd, "route.key"),
		}
	}
	return l
}

// MintCluster creates the full TLS layout in dir (created 0700).
//
//   - Client CA: reused if both client-ca files exist, because clients of the
//     bus already trust it; minted otherwise. A half-present pair is an error
//     rather than being overwritten, since it may be the operator's only copy.
//   - Route CA: kept if both route-ca files exist and forceRouteCA is false,
//     otherwise minted fresh. It is internal to the cluster, so rotating it
//     only requires redeploying node route certs.
//   - Route secret: kept if present and forceRouteCA is false (rotating it on
//     a live cluster breaks routes just like a new CA); otherwise regenerated.
//   - Operator, server and route leaf certs are always re-issued.
func MintCluster(dir string, nodes []NodeSpec, forceRouteCA bool) (*Layout, error) {
	names := make([]string, 0, len(nodes))
	seen := map[string]bool{}
	for _, n := range nodes {
		if err := validNodeName(n.Name); err != nil {
			return nil, fmt.Errorf("mint cluster in %s: %w", dir, err)
		}
		if seen[n.Name] {
			return nil, fmt.Errorf("mint cluster in %s: duplicate node name %q", dir, n.Name)
		}
		seen[n.Name] = true
		names = append(names, n.Name)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("mint cluster: create directory %s: %w", dir, pathErr(err))
	}
	l := LayoutFor(dir, names)

	clientCA, err := loadOrMintClientCA(l)
	if err != nil {
		return nil, err
	}
	routeCA, err := loadOrMintRouteCA(l, forceRouteCA)
	if err != nil {
		return nil, err
	}
	if err := ensureRouteSecret(l.RouteSecret, forceRouteCA); err != nil {
		return nil, err
	}

	op, err := clientCA.IssueClient(OperatorCommonName, ClusterValidity)
	if err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	if _, _, err := WriteFiles(dir, "operator", op.CertPEM, op.KeyPEM); err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}

	for _, n := range nodes {
		nodeDir := filepath.Join(dir, n.Name)
		srv, err := clientCA.IssueServer(n.Name, n.Hosts, ClusterValidity)
		if err != nil {
			return nil, fmt.Errorf("mint cluster: node %s: %w", n.Name, err)
		}
		if _, _, err := WriteFiles(nodeDir, "server", srv.CertPEM, srv.KeyPEM); err != nil {
			return nil, fmt.Errorf("mint cluster: node %s: %w", n.Name, err)
		}
		rt, err := routeCA.IssueRoute(n.Name, n.Hosts, ClusterValidity)
		if err != nil {
			return nil, fmt.Errorf("mint cluster: node %s: %w", n.Name, err)
		}
		if _, _, err := WriteFiles(nodeDir, "route", rt.CertPEM, rt.KeyPEM); err != nil {
			return nil, fmt.Errorf("mint cluster: node %s: %w", n.Name, err)
		}
	}
	return l, nil
}

// validNodeName rejects names that would escape dir or collide with the
// top-level files when used as a directory name.
func validNodeName(name string) error {
	switch {
	case name == "":
		return errors.New("empty node name")
	case strings.HasPrefix(name, "."), strings.ContainsAny(name, `/\`):
		// Leading dots also cover "." / ".." and WriteFiles' temp files.
		return fmt.Errorf("node name %q is not a plain directory name", name)
	case reservedNames[name]:
		return fmt.Errorf("node name %q clashes with a cluster file name", name)
	}
	return nil
}

var reservedNames = func() map[string]bool {
	l := LayoutFor("", nil)
	m := map[string]bool{}
	for _, p := range []string{l.ClientCACert, l.ClientCAKey, l.RouteCACert, l.RouteCAKey, l.RouteSecret, l.OperatorCert, l.OperatorKey} {
		m[p] = true
	}
	return m
}()

func loadOrMintClientCA(l *Layout) (*CA, error) {
	certOK, err := exists(l.ClientCACert)
	if err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	keyOK, err := exists(l.ClientCAKey)
	if err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	switch {
	case certOK && keyOK:
		ca, err := LoadCA(l.ClientCACert, l.ClientCAKey)
		if err != nil {
			return nil, fmt.Errorf("mint cluster: reuse client CA: %w", err)
		}
		return ca, nil
	case certOK != keyOK:
		return nil, fmt.Errorf("mint cluster: only one of %s and %s exists; restore the missing file or remove both to mint a new client CA", l.ClientCACert, l.ClientCAKey)
	}
	ca, err := NewCA(ClientCACommonName, ClusterValidity)
	if err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	if _, _, err := WriteFiles(l.Dir, "client-ca", ca.CertPEM, ca.KeyPEM); err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	return ca, nil
}

func loadOrMintRouteCA(l *Layout, force bool) (*CA, error) {
	if !force {
		certOK, err := exists(l.RouteCACert)
		if err != nil {
			return nil, fmt.Errorf("mint cluster: %w", err)
		}
		keyOK, err := exists(l.RouteCAKey)
		if err != nil {
			return nil, fmt.Errorf("mint cluster: %w", err)
		}
		if certOK && keyOK {
			ca, err := LoadCA(l.RouteCACert, l.RouteCAKey)
			if err != nil {
				return nil, fmt.Errorf("mint cluster: reuse route CA (pass forceRouteCA to replace it): %w", err)
			}
			return ca, nil
		}
	}
	ca, err := NewCA(RouteCACommonName, ClusterValidity)
	if err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	if _, _, err := WriteFiles(l.Dir, "route-ca", ca.CertPEM, ca.KeyPEM); err != nil {
		return nil, fmt.Errorf("mint cluster: %w", err)
	}
	return ca, nil
}

func ensureRouteSecret(path string, force bool) error {
	if !force {
		ok, err := exists(path)
		if err != nil {
			return fmt.Errorf("mint cluster: %w", err)
		}
		if ok {
			// Validate rather than silently replace a badly protected file.
			if _, err := ReadSecretFile(path); err != nil {
				return fmt.Errorf("mint cluster: %w", err)
			}
			return nil
		}
	}
	secret, err := randomHex(32)
	if err != nil {
		return fmt.Errorf("mint cluster: route secret: %w", err)
	}
	if err := writeAtomic(path, []byte(secret+"\n"), keyFileMode); err != nil {
		return fmt.Errorf("mint cluster: route secret: %w", err)
	}
	return nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, pathErr(err))
	}
}
