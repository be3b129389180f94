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

// ACL is the per-subject permission set of an admitted user: its own inbox
// and, for each room it belongs to, the room's subjects plus exactly the
// JetStream API a member needs to read that room's stream (create, read
// and delete its own consumers, stream info, acks, flow control). Allow
// lists deny everything else: $KV.>, other streams, stream and consumer
// administration, unibus.sys.>, other rooms and other users' inboxes.
// Admins get the same bus permissions as members: they administer through
// the signed HTTPS control plane and the on-node CLI, not the bus.
func ACL(u store.User, rooms []string) *server.Permissions {
	inbox := InboxPrefix(u.SignPub) + ".>"
	pub := []string{inbox}
	sub := []string{inbox}
	for _, id := range rooms {
		stream := "ROOM_" + id
		room := RoomSubjectPrefix + id + ".>"
		pub = append(pub, room,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.CONSUMER.CREATE."+stream, "$JS.API.CONSUMER.CREATE."+stream+".>",
			"$JS.API.CONSUMER.INFO."+stream+".>", "$JS.API.CONSUMER.DELETE."+stream+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+stream+".>",
			"$JS.ACK."+stream+".>", "$JS.FC."+stream+".>")
		sub = append(sub, room)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}
