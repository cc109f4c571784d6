// Package gomsservice implements goms.v1.GoMsService: named items kept in
// memory, with a change feed (Watch) and the two other streaming shapes
// (CreateMany, Lookup).
package gomsservice

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/reversTeam/go-ms/examples/services/internal/store"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// Service is the in-memory implementation of goms.v1.GoMsService. It is
// safe for concurrent use; create it with New.
type Service struct {
	items *store.Store[record]
	hub   *hub
}

var _ gomsv1connect.GoMsServiceHandler = (*Service)(nil)

// record is the stored form of an Item; a plain value, so that the store
// can hand out copies without sharing protobuf messages between requests.
type record struct {
	id, name         string
	created, updated time.Time
}

func (r record) proto() *gomsv1.Item {
	return &gomsv1.Item{
		Id:         r.id,
		Name:       r.name,
		CreateTime: timestamppb.New(r.created),
		UpdateTime: timestamppb.New(r.updated),
	}
}

// New returns an empty Service.
func New() *Service {
	h := newHub()
	return &Service{
		hub: h,
		items: store.New(store.Options[record]{
			Key: func(r record) string { return r.name },
			Conflict: func(r record) error {
				return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("an item named %q already exists", r.name))
			},
			OnChange: h.publish,
		}),
	}
}

// Create stores a new item under a server-assigned id.
func (s *Service) Create(_ context.Context, req *connect.Request[gomsv1.CreateRequest]) (*connect.Response[gomsv1.CreateResponse], error) {
	name := req.Msg.GetName()
	if err := store.Required("name", name); err != nil {
		return nil, err
	}
	now := time.Now()
	r, err := s.items.Create(func(id string) record {
		return record{id: id, name: name, created: now, updated: now}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.CreateResponse{Item: r.proto()}), nil
}

// Get returns one item by id.
func (s *Service) Get(_ context.Context, req *connect.Request[gomsv1.GetRequest]) (*connect.Response[gomsv1.GetResponse], error) {
	r, err := s.items.Get(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.GetResponse{Item: r.proto()}), nil
}

// List returns items in creation order, one page at a time.
func (s *Service) List(_ context.Context, req *connect.Request[gomsv1.ListRequest]) (*connect.Response[gomsv1.ListResponse], error) {
	rs, next, err := s.items.List(req.Msg.GetPageSize(), req.Msg.GetPageToken(), nil)
	if err != nil {
		return nil, err
	}
	res := &gomsv1.ListResponse{Items: make([]*gomsv1.Item, len(rs)), NextPageToken: next}
	for i, r := range rs {
		res.Items[i] = r.proto()
	}
	return connect.NewResponse(res), nil
}

// Update renames an item; the new name must not belong to another item.
func (s *Service) Update(_ context.Context, req *connect.Request[gomsv1.UpdateRequest]) (*connect.Response[gomsv1.UpdateResponse], error) {
	name := req.Msg.GetName()
	if err := store.Required("name", name); err != nil {
		return nil, err
	}
	r, err := s.items.Update(req.Msg.GetId(), func(r record) record {
		r.name, r.updated = name, time.Now()
		return r
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.UpdateResponse{Item: r.proto()}), nil
}

// Delete removes an item.
func (s *Service) Delete(_ context.Context, req *connect.Request[gomsv1.DeleteRequest]) (*connect.Response[gomsv1.DeleteResponse], error) {
	if _, err := s.items.Delete(req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gomsv1.DeleteResponse{}), nil
}

// Watch streams every change made after the call starts, until ctx ends
// (it then returns ctx.Err()) or the caller reads too slowly to keep up
// (it then fails with resource_exhausted and the caller should reconnect).
// The response headers go out as soon as the watcher is subscribed, so a
// caller whose Watch call has returned sees every later change.
func (s *Service) Watch(ctx context.Context, _ *connect.Request[gomsv1.WatchRequest], stream *connect.ServerStream[gomsv1.WatchResponse]) error {
	sub := s.hub.subscribe()
	defer s.hub.unsubscribe(sub)
	// Connect clients wait for the response headers before returning the
	// stream, and connect-go sends them with the first message; a nil
	// message sends them alone, so an idle feed does not look hung.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for {
		// Checked first so that a dropped watcher stops at once rather
		// than replaying a backlog that already has a gap after it.
		select {
		case <-sub.dropped:
			return errFellBehind()
		default:
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.dropped:
			return errFellBehind()
		case ev := <-sub.events:
			if err := stream.Send(ev.proto()); err != nil {
				return err
			}
		}
	}
}

// CreateMany receives every requested item, then stores them all or, if
// one is invalid or its name is taken, none; the error names the index of
// the offending message.
func (s *Service) CreateMany(_ context.Context, stream *connect.ClientStream[gomsv1.CreateManyRequest]) (*connect.Response[gomsv1.CreateManyResponse], error) {
	var names []string
	for stream.Receive() {
		name := stream.Msg().GetName()
		if err := store.Required("name", name); err != nil {
			return nil, store.AtIndex(len(names), err)
		}
		names = append(names, name)
	}
	if err := stream.Err(); err != nil {
		return nil, err
	}
	now := time.Now()
	rs, err := s.items.CreateAll(len(names), func(i int, id string) record {
		return record{id: id, name: names[i], created: now, updated: now}
	})
	if err != nil {
		return nil, err
	}
	res := &gomsv1.CreateManyResponse{Items: make([]*gomsv1.Item, len(rs))}
	for i, r := range rs {
		res.Items[i] = r.proto()
	}
	return connect.NewResponse(res), nil
}

// Lookup answers each requested id with its item, or with no item when
// none has that id, until the caller closes its side. An empty id ends the
// stream with invalid_argument.
func (s *Service) Lookup(_ context.Context, stream *connect.BidiStream[gomsv1.LookupRequest, gomsv1.LookupResponse]) error {
	for {
		req, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		id := req.GetId()
		if err := store.Required("id", id); err != nil {
			return err
		}
		res := &gomsv1.LookupResponse{Id: id}
		switch r, err := s.items.Get(id); {
		case err == nil:
			res.Item = r.proto()
		case connect.CodeOf(err) != connect.CodeNotFound:
			return err
		}
		if err := stream.Send(res); err != nil {
			return err
		}
	}
}
