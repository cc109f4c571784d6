package gomsservice

import (
	"errors"
	"sync"

	"connectrpc.com/connect"

	"github.com/reversTeam/go-ms/examples/services/internal/store"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
)

// watchBuffer is how many changes a watcher may lag behind before it is
// dropped.
const watchBuffer = 64

// errFellBehind is built per call: connect may add metadata to an error
// it sends, so handlers must not share one.
func errFellBehind() error {
	return connect.NewError(connect.CodeResourceExhausted, errors.New("watcher fell behind; reconnect"))
}

// event is one change, kept as a plain value so that each watcher builds
// its own message.
type event struct {
	change store.Change
	item   record
}

func (e event) proto() *gomsv1.WatchResponse {
	t := gomsv1.ChangeType_CHANGE_TYPE_UNSPECIFIED
	switch e.change {
	case store.Created:
		t = gomsv1.ChangeType_CHANGE_TYPE_CREATED
	case store.Updated:
		t = gomsv1.ChangeType_CHANGE_TYPE_UPDATED
	case store.Deleted:
		t = gomsv1.ChangeType_CHANGE_TYPE_DELETED
	}
	return &gomsv1.WatchResponse{Type: t, Item: e.item.proto()}
}

// hub broadcasts changes to the running Watch calls.
type hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	events  chan event
	dropped chan struct{} // closed when the subscriber fell behind
}

func newHub() *hub {
	return &hub{subs: make(map[*subscriber]struct{})}
}

func (h *hub) subscribe() *subscriber {
	sub := &subscriber{events: make(chan event, watchBuffer), dropped: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[sub] = struct{}{}
	return sub
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
}

// publish never blocks: the store calls it under its write lock, so a
// stalled watcher must not hold up writers. A watcher whose buffer is full
// is dropped instead.
func (h *hub) publish(c store.Change, r record) {
	ev := event{change: c, item: r}
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range h.subs {
		select {
		case sub.events <- ev:
		default:
			delete(h.subs, sub)
			close(sub.dropped)
		}
	}
}

// len returns the number of subscribed watchers.
func (h *hub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}
