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

// RoomConsumer is the name of the one durable pull consumer a user reads a
// room's stream with. The control plane creates it on the user's behalf
// (POST /v1/rooms/{id}/consumer); the name is deterministic, so the ACL
// can name it without asking any bucket, and one user has at most one per
// room.
func RoomConsumer(signPub string) string { return "u_" + signPub[:16] }

// ACL is the per-subject permission set of an admitted user: its own inbox
// and, for each room it belongs to, the room's subjects plus exactly the
// JetStream API needed to read the room through its own control-plane-made
// pull consumer: fetch (MSG.NEXT), ack and consumer info, and the room
// stream's info. A reset goes through the control plane too (rate-limited:
// see below). Nothing that creates or deletes a consumer: a push
// consumer's deliver subject is not covered by publish permissions (the
// server delivers wherever the config says), so only the control plane
// creates consumers, and only pull ones. Acks are limited to the user's
// own consumer, so nobody acks, drains or deletes another member's.
// Allow lists deny everything else: $KV.>, other streams, stream and
// consumer administration, unibus.sys.>, other rooms and other users'
// inboxes. Admins get the same bus permissions as members: they administer
// through the signed HTTPS control plane and the on-node CLI, not the bus.
//
// Residual (bounded, not closed): the reply subject of a publish is not
// checked by nats-server, so a MSG.NEXT request to the user's own consumer
// can name a foreign reply subject and the server delivers the room's
// ciphertext there. The consumer's MaxAckPending, MaxWaiting and
// MaxRequestBatch (api.RoomConsumerConfig) bound how much per AckWait, and
// resets (which would start a new window) are rate-limited by the control
// plane; closing it needs the daemon's own subjects in another account.
func ACL(u store.User, rooms []string) *server.Permissions {
	inbox := InboxPrefix(u.SignPub) + ".>"
	cons := RoomConsumer(u.SignPub)
	pub := []string{inbox}
	sub := []string{inbox}
	for _, id := range rooms {
		stream := "ROOM_" + id
		room := RoomSubjectPrefix + id + ".>"
		pub = append(pub, room,
			"$JS.API.STREAM.INFO."+stream,
			"$JS.API.CONSUMER.INFO."+stream+"."+cons,
			"$JS.API.CONSUMER.MSG.NEXT."+stream+"."+cons,
			"$JS.ACK."+stream+"."+cons+".>")
		sub = append(sub, room)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}
