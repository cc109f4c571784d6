package testservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// watchBuffer is how many changes a Watch call may lag behind before it
// fails with resource_exhausted.
const watchBuffer = 64

// GoMs is goms.v1.GoMsService over named items kept in memory: ids are 16
// hex digits drawn at random, names are unique (already_exists), an
// unknown id is not_found, an empty name or id invalid_argument. It is
// safe for concurrent use; create it with NewGoMs. Tests may embed it to
// change one method.
type GoMs struct {
	items *table[*gomsv1.Item]

	mu       sync.Mutex // guards watchers
	watchers map[chan *gomsv1.WatchResponse]struct{}
}

var _ gomsv1connect.GoMsServiceHandler = (*GoMs)(nil)

// NewGoMs returns a GoMs without items.
func NewGoMs() *GoMs {
	s := &GoMs{watchers: map[chan *gomsv1.WatchResponse]struct{}{}}
	s.items = newTable(
		func(item *gomsv1.Item) string { return item.GetName() },
		func(item *gomsv1.Item) error {
			return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("an item named %q already exists", item.GetName()))
		})
	s.items.changed = s.publish
	return s
}

// Create stores an item under a new id.
func (s *GoMs) Create(_ context.Context, req *connect.Request[gomsv1.CreateRequest]) (*connect.Response[gomsv1.CreateResponse], error) {
	if err := required("name", req.Msg.GetName()); err != nil {
		return nil, err
	}
	items, err := s.create([]string{req.Msg.GetName()})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.CreateResponse{Item: items[0]}), nil
}

func (s *GoMs) create(names []string) ([]*gomsv1.Item, error) {
	now := timestamppb.Now()
	return s.items.create(len(names), func(i int, id string) *gomsv1.Item {
		return &gomsv1.Item{Id: id, Name: names[i], CreateTime: now, UpdateTime: now}
	})
}

// Get returns the item of an id.
func (s *GoMs) Get(_ context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	item, err := s.items.get(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: item}), nil
}

// List returns the items in creation order, a page at a time: 50 items
// when page_size is 0, at most 1000.
func (s *GoMs) List(_ context.Context, req *connect.Request[gomsv1.ListRequest]) (*connect.Response[gomsv1.ListResponse], error) {
	items, next, err := s.items.list(req.Msg.GetPageSize(), req.Msg.GetPageToken(), nil)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.ListResponse{Items: items, NextPageToken: next}), nil
}

// Update renames an item.
func (s *GoMs) Update(_ context.Context, req *connect.Request[gomsv1.UpdateRequest]) (*connect.Response[gomsv1.UpdateResponse], error) {
	if err := required("name", req.Msg.GetName()); err != nil {
		return nil, err
	}
	item, err := s.items.update(req.Msg.GetId(), func(old *gomsv1.Item) *gomsv1.Item {
		item := proto.CloneOf(old)
		item.Name, item.UpdateTime = req.Msg.GetName(), timestamppb.Now()
		return item
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.UpdateResponse{Item: item}), nil
}

// Delete removes an item.
func (s *GoMs) Delete(_ context.Context, req *connect.Request[gomsv1.DeleteRequest]) (*connect.Response[gomsv1.DeleteResponse], error) {
	if err := s.items.remove(req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.DeleteResponse{}), nil
}

// Watch streams every change made after the call starts, until ctx ends;
// it sends the response headers at once, so that a caller whose Watch has
// returned sees every later change. A caller more than 64 changes behind
// gets resource_exhausted.
func (s *GoMs) Watch(ctx context.Context, _ *connect.Request[gomsv1.WatchRequest], stream *connect.ServerStream[gomsv1.WatchResponse]) error {
	events := make(chan *gomsv1.WatchResponse, watchBuffer)
	s.mu.Lock()
	s.watchers[events] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.watchers, events)
		s.mu.Unlock()
	}()
	if err := stream.Send(nil); err != nil { // the headers alone
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				return connect.NewError(connect.CodeResourceExhausted, errors.New("watcher fell behind; reconnect"))
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}

// publish hands a change to every watcher without blocking the writer
// that made it; a watcher whose buffer is full is closed and dropped.
func (s *GoMs) publish(change gomsv1.ChangeType, item *gomsv1.Item) {
	ev := &gomsv1.WatchResponse{Type: change, Item: item}
	s.mu.Lock()
	defer s.mu.Unlock()
	for events := range s.watchers {
		select {
		case events <- ev:
		default:
			close(events)
			delete(s.watchers, events)
		}
	}
}

// CreateMany stores every item the stream names, or none when one name is
// empty (invalid_argument naming its message) or taken.
func (s *GoMs) CreateMany(_ context.Context, stream *connect.ClientStream[gomsv1.CreateManyRequest]) (*connect.Response[gomsv1.CreateManyResponse], error) {
	var names []string
	for stream.Receive() {
		if required("name", stream.Msg().GetName()) != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("message %d: name must not be empty", len(names)))
		}
		names = append(names, stream.Msg().GetName())
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	items, err := s.create(names)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.CreateManyResponse{Items: items}), nil
}

// Lookup answers each id it receives with its item, or without one when
// no item has that id, until the caller closes its side; an empty id ends
// the stream with invalid_argument.
func (s *GoMs) Lookup(_ context.Context, stream *connect.BidiStream[gomsv1.LookupRequest, gomsv1.LookupResponse]) error {
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		item, err := s.items.get(req.GetId())
		if connect.CodeOf(err) != connect.CodeNotFound && err != nil {
			return err
		}
		if err := stream.Send(&gomsv1.LookupResponse{Id: req.GetId(), Item: item}); err != nil {
			return err
		}
	}
}
