package node

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// operatorSysSubjects are the system-account requests the runbook's Verify
// step makes with the standard `nats` CLI (`server list`, `server report
// jetstream`). They are imported into the global account so the internal
// service identity, which must live in the JetStream account, can make them
// too. Users never can: their ACL allows only their inbox and rooms.
var operatorSysSubjects = []string{
	"$SYS.REQ.SERVER.PING",
	"$SYS.REQ.SERVER.PING.STATSZ",
	"$SYS.REQ.SERVER.PING.VARZ",
	"$SYS.REQ.SERVER.PING.JSZ",
	"$SYS.REQ.SERVER.PING.ROUTEZ",
	"$SYS.REQ.SERVER.PING.HEALTHZ",
}

func importSystemRequests(s *server.Server) error {
	sys, g := s.SystemAccount(), s.GlobalAccount()
	if sys == nil || g == nil {
		return fmt.Errorf("no system or global account")
	}
	for _, subj := range operatorSysSubjects {
		if err := sys.AddServiceExportWithResponse(subj, server.Streamed, []*server.Account{g}); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		if err := g.AddServiceImport(sys, subj, ""); err != nil {
			return fmt.Errorf("import %s: %w", subj, err)
		}
	}
	return nil
}
