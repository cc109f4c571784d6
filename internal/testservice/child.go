package testservice

import (
	"context"
	"fmt"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

// Child is child.v1.ChildService over items kept in memory that each
// belong to a goms.v1 item, which Create checks with a Get through a
// GoMsService client: a service that calls another. Names are unique per
// parent; ids, codes and pages are those of GoMs. It is safe for
// concurrent use; create it with NewChild.
type Child struct {
	parents gomsv1connect.GoMsServiceClient
	items   *table[*childv1.Item]
}

var _ childv1connect.ChildServiceHandler = (*Child)(nil)

// NewChild returns a Child without items that checks parents through the
// given client.
func NewChild(parents gomsv1connect.GoMsServiceClient) *Child {
	return &Child{parents: parents, items: newTable(
		func(item *childv1.Item) string { return strconv.Quote(item.GetParentId()) + item.GetName() },
		func(item *childv1.Item) error {
			return connect.NewError(connect.CodeAlreadyExists,
				fmt.Errorf("parent item %q already has a child named %q", item.GetParentId(), item.GetName()))
		})}
}

// Create stores a child item once its parent's Get has succeeded: a
// parent that is not found makes failed_precondition, any other failure
// of the Get keeps its code.
func (s *Child) Create(ctx context.Context, req *connect.Request[childv1.CreateRequest]) (*connect.Response[childv1.CreateResponse], error) {
	parentID, name := req.Msg.GetParentId(), req.Msg.GetName()
	if err := required("parent_id", parentID); err != nil {
		return nil, err
	}
	if err := required("name", name); err != nil {
		return nil, err
	}
	_, err := s.parents.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: parentID}))
	switch {
	case connect.CodeOf(err) == connect.CodeNotFound:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("parent item %q does not exist", parentID))
	case err != nil:
		return nil, connect.NewError(connect.CodeOf(err), fmt.Errorf("checking parent %q: %w", parentID, err))
	}
	now := timestamppb.Now()
	items, err := s.items.create(1, func(_ int, id string) *childv1.Item {
		return &childv1.Item{Id: id, ParentId: parentID, Name: name, CreateTime: now, UpdateTime: now}
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.CreateResponse{Item: items[0]}), nil
}

// Get returns the child item of an id.
func (s *Child) Get(_ context.Context, req *connect.Request[childv1.GetRequest]) (*connect.Response[childv1.GetResponse], error) {
	item, err := s.items.get(req.Msg.GetId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.GetResponse{Item: item}), nil
}

// List returns the child items in creation order, a page at a time, only
// those of one parent when parent_id is set.
func (s *Child) List(_ context.Context, req *connect.Request[childv1.ListRequest]) (*connect.Response[childv1.ListResponse], error) {
	var keep func(*childv1.Item) bool
	if parentID := req.Msg.GetParentId(); parentID != "" {
		keep = func(item *childv1.Item) bool { return item.GetParentId() == parentID }
	}
	items, next, err := s.items.list(req.Msg.GetPageSize(), req.Msg.GetPageToken(), keep)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.ListResponse{Items: items, NextPageToken: next}), nil
}

// Update renames a child item.
func (s *Child) Update(_ context.Context, req *connect.Request[childv1.UpdateRequest]) (*connect.Response[childv1.UpdateResponse], error) {
	if err := required("name", req.Msg.GetName()); err != nil {
		return nil, err
	}
	item, err := s.items.update(req.Msg.GetId(), func(old *childv1.Item) *childv1.Item {
		item := proto.CloneOf(old)
		item.Name, item.UpdateTime = req.Msg.GetName(), timestamppb.Now()
		return item
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.UpdateResponse{Item: item}), nil
}

// Delete removes a child item.
func (s *Child) Delete(_ context.Context, req *connect.Request[childv1.DeleteRequest]) (*connect.Response[childv1.DeleteResponse], error) {
	if err := s.items.remove(req.Msg.GetId()); err != nil {
		return nil, err
	}
	return connect.NewResponse(&childv1.DeleteResponse{}), nil
}
