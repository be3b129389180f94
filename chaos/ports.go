package chaos

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Test ports stay out of Linux's ephemeral range (32768–60999): a restarted
// node must be able to rebind its port, which an outgoing connection's
// ephemeral source port could otherwise be holding.
const (
	portLow  = 20000
	portHigh = 29999
)

var (
	portMu    sync.Mutex
	portTaken = map[int]bool{}
)

// PortBlock reserves n consecutive free TCP ports on 127.0.0.1 for the life
// of the process and returns the first. "Free" is checked by binding each.
func PortBlock(n int) (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for try := 0; try < 200; try++ {
		base := portLow + rand.IntN(portHigh-portLow-n)
		if blockFree(base, n) {
			for p := base; p < base+n; p++ {
				portTaken[p] = true
			}
			return base, nil
		}
	}
	return 0, fmt.Errorf("no block of %d free ports in %d-%d", n, portLow, portHigh)
}

func blockFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		if portTaken[p] {
			return false
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			return false
		}
		_ = l.Close()
	}
	return true
}
