package probe

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/unibus/clusterkit/chaos/natstest"
)

// TestRoomFullRecognised: a publish to a stream at its limits with
// DiscardNew (a full room) is refused with an error roomFull recognises,
// for both MaxMsgs and MaxBytes. publishOne gives up on it instead of
// retrying a refusal that only time fixes. It rests on nats-server's
// error text, so it runs against the real server.
func TestRoomFullRecognised(t *testing.T) {
	_, _, js := natstest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "MSGS", Subjects: []string{"m.>"}, MaxMsgs: 2, Discard: jetstream.DiscardNew},
		{Name: "BYTES", Subjects: []string{"b.>"}, MaxBytes: 300, Discard: jetstream.DiscardNew},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		subj := cfg.Subjects[0][:1] + ".x"
		var last error
		for i := 0; i < 20 && last == nil; i++ {
			_, last = js.Publish(ctx, subj, make([]byte, 100))
		}
		var apiErr *jetstream.APIError
		if !errors.As(last, &apiErr) || apiErr.ErrorCode != jsErrCodeStoreFailed || !roomFull(apiErr) {
			t.Errorf("%s: a publish to the full stream failed with %v; want a store failure roomFull recognises", cfg.Name, last)
		}
	}
	if roomFull(&jetstream.APIError{ErrorCode: jsErrCodeStoreFailed, Description: "some other store failure"}) {
		t.Error("roomFull on another store failure")
	}
}
