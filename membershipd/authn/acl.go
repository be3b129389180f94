package authn

import (
	"github.com/nats-io/nats-server/v2/server"

	"github.com/unibus/clusterkit/membershipd/store"
)

// InboxPrefix is the only inbox a user may subscribe to: clients set it
// with nats.CustomInboxPrefix, so no one can read another user's replies.
func InboxPrefix(signPub string) string { return "_INBOX_" + signPub[:16] }

// RoomSubjectPrefix prefixes every room's data-plane subjects.
const RoomSubjectPrefix = "unibus.room."

// ACL is the per-subject permission set of an admitted user. Allow lists
// deny everything else, which keeps users away from $KV.>, $JS.API.>
// (stream and consumer administration), unibus.sys.> and other users'
// inboxes. Room subjects are added per membership by the rooms layer.
// Admins get the same bus permissions as members: they administer through
// the signed HTTPS control plane and the on-node CLI, not the bus.
func ACL(u store.User) *server.Permissions {
	inbox := InboxPrefix(u.SignPub) + ".>"
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{inbox}},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox}},
	}
}
