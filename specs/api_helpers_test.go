package specs

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/unibus/clusterkit/chaos"
	"github.com/unibus/clusterkit/membershipd/api"
	"github.com/unibus/clusterkit/membershipd/identity"
	"github.com/unibus/clusterkit/membershipd/pki"
)

// apiBase is node n's control-plane base URL.
func apiBase(n chaos.Node) string { return strings.TrimSuffix(n.HealthzURL(), "/healthz") }

// signedRequest builds a request to node n signed by id at time at for n's
// cluster (a POST with a fresh idempotency key).
func (e *Env) signedRequest(n chaos.Node, id *identity.Identity, method, path string, body []byte, at time.Time) *http.Request {
	GinkgoHelper()
	r, err := http.NewRequest(method, apiBase(n)+path, bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	r.Header.Set(identity.HeaderCluster, e.clusterName(n))
	if method != http.MethodGet {
		r.Header.Set(identity.HeaderIdempotencyKey, identity.NewIdempotencyKey())
	}
	Expect(identity.SignRequest(r, body, id, at)).To(Succeed())
	return r
}

// clusterName asks node n which cluster it belongs to (signed into every
// request).
func (e *Env) clusterName(n chaos.Node) string {
	GinkgoHelper()
	r, err := http.NewRequest(http.MethodGet, apiBase(n)+api.PathCluster, nil)
	Expect(err).NotTo(HaveOccurred())
	code, b := e.send(r, nil)
	Expect(code).To(Equal(http.StatusOK), string(b))
	var ci api.ClusterInfo
	Expect(json.Unmarshal(b, &ci)).To(Succeed())
	Expect(ci.Cluster).NotTo(BeEmpty())
	return ci.Cluster
}

// send sends a (possibly replayed) request and returns status and body.
func (e *Env) send(r *http.Request, body []byte) (int, []byte) {
	GinkgoHelper()
	pool, err := pki.CertPoolFromFile(e.Cluster.TLS().ClientCA)
	Expect(err).NotTo(HaveOccurred())
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	r = r.Clone(context.Background())
	r.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := hc.Do(r)
	Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, b
}

// call signs and sends one request now, decoding a JSON answer into out.
func (e *Env) call(n chaos.Node, id *identity.Identity, method, path string, in, out any) int {
	GinkgoHelper()
	var body []byte
	if in != nil {
		var err error
		body, err = json.Marshal(in)
		Expect(err).NotTo(HaveOccurred())
	}
	code, b := e.send(e.signedRequest(n, id, method, path, body, time.Now()), body)
	GinkgoWriter.Printf("%s %s on %s -> %d %s\n", method, path, n.Name(), code, b)
	if out != nil && code < 300 {
		Expect(json.Unmarshal(b, out)).To(Succeed())
	}
	if method == "POST" && path == api.PathRooms && code == 201 {
		var room api.Room
		if json.Unmarshal(b, &room) == nil {
			noteSpecRoom(room.ID)
		}
	}
	return code
}
