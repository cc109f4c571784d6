// Package childservice implements child.v1.ChildService: items kept in
// memory that each belong to a goms.v1 item, whose existence is checked
// through a call to goms.v1.GoMsService.
package childservice

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/reversTeam/go-ms/examples/services/internal/store"
	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// Service is the in-memory implementation of child.v1.ChildService. It is
// safe for concurrent use; create it with New.
type Service struct {
	parents gomsv1connect.GoMsServiceClient
	items   *store.Store[record]
}

var _ childv1connect.ChildServiceHandler = (*Service)(nil)

// record is the stored form of an Item; a plain value, so that the store
// can hand out copies without sharing protobuf messages between requests.
type record struct {
	id, parentID, name string
	created, updated   time.Time
}

func (r record) proto() *childv1.Item {
	return &childv1.Item{
		Id:         r.id,
		ParentId:   r.parentID,
		Name:       r.name,
		CreateTime: timestamppb.New(r.created),
		UpdateTime: timestamppb.New(r.updated),
	}
}

// New returns an empty Service that checks parents through the given
// goms.v1.GoMsService client.
func New(parents gomsv1connect.GoMsServiceClient) *Service {
	return &Service{
		parents: parents,
		items: store.New(store.Options[record]{
			// Names are unique per parent. Quoting the parent id keeps
			// distinct (parent, name) pairs from sharing a key.
			Key: func(r record) string { return strconv.Quote(r.parentID) + r.name },
			Conflict: func(r record) error {
				return connect.NewError(connect.CodeAlreadyExists,
					fmt.Errorf("parent item %q already has a child named %q", r.parentID, r.name))
			},
		}),
	}
}

// Create stores a new child item after checking that its parent exists.
func (s *Service) Create(ctx context.Context, req *connect.Request[childv1.CreateRequest]) (*connect.Response[childv1.CreateResponse], error) {
	parentID, name := req.Msg.GetParentId(), req.Msg.GetName()
	if err := store.Required("parent_id", parentID); err != nil {
		return nil, err
	}
	if err := store.Required("name", name); err != nil {
		return nil, err
	}
	if err := s.checkParent(ctx, parentID); err != nil {
		return nil, err
	}
	// The parent may be deleted between the check and the insert; across
	// two services without transactions that window cannot be closed.
	now := time.Now()
	r, err := s.items.Create(func(id string) record {
		return record{id: id, parentID: parentID, name: name, created: now, updated: now}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.CreateResponse{Item: r.proto()}), nil
}

// checkParent asks the parent service whether id exists. A missing parent
// is the caller's mistake (failed_precondition); any other failure keeps
// the parent call's code, so that for example unavailable stays retryable.
func (s *Service) checkParent(ctx context.Context, id string) error {
	_, err := s.parents.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: id}))
	switch {
	case err == nil:
		return nil
	case connect.CodeOf(err) == connect.CodeNotFound:
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("parent item %q does not exist", id))
	}
	return connect.NewError(connect.CodeOf(err), fmt.Errorf("checking parent %q: %w", id, err))
}

// Get returns one child item by id.
func (s *Service) Get(_ context.Context, req *connect.Request[childv1.GetRequest]) (*connect.Response[childv1.GetResponse], error) {
	r, err := s.items.Get(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.GetResponse{Item: r.proto()}), nil
}

// List returns child items in creation order, one page at a time, only
// those of one parent when parent_id is set.
func (s *Service) List(_ context.Context, req *connect.Request[childv1.ListRequest]) (*connect.Response[childv1.ListResponse], error) {
	var keep func(record) bool
	if parentID := req.Msg.GetParentId(); parentID != "" {
		keep = func(r record) bool { return r.parentID == parentID }
	}
	rs, next, err := s.items.List(req.Msg.GetPageSize(), req.Msg.GetPageToken(), keep)
	if err != nil {
		return nil, err
	}
	res := &childv1.ListResponse{Items: make([]*childv1.Item, len(rs)), NextPageToken: next}
	for i, r := range rs {
		res.Items[i] = r.proto()
	}
	return connect.NewResponse(res), nil
}

// Update renames a child item; the new name must not belong to another
// child of the same parent.
func (s *Service) Update(_ context.Context, req *connect.Request[childv1.UpdateRequest]) (*connect.Response[childv1.UpdateResponse], error) {
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
	return connect.NewResponse(&childv1.UpdateResponse{Item: r.proto()}), nil
}

// Delete removes a child item.
func (s *Service) Delete(_ context.Context, req *connect.Request[childv1.DeleteRequest]) (*connect.Response[childv1.DeleteResponse], error) {
	if _, err := s.items.Delete(req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.DeleteResponse{}), nil
}
