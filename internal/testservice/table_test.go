package testservice

import (
	"context"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
)

// TestGoMsStore checks what goms's tests take for granted and do not
// assert themselves: pages in creation order that survive a deletion,
// unique names, and the codes of bad input.
func TestGoMsStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := NewGoMs()
	var ids []string
	for i := range 5 {
		res, err := s.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: fmt.Sprint("item ", i)}))
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		ids = append(ids, res.Msg.GetItem().GetId())
	}
	list := func(size int32, token string) ([]string, string, error) {
		res, err := s.List(ctx, connect.NewRequest(&gomsv1.ListRequest{PageSize: size, PageToken: token}))
		if err != nil {
			return nil, "", err
		}
		var names []string
		for _, item := range res.Msg.GetItems() {
			names = append(names, item.GetName())
		}
		return names, res.Msg.GetNextPageToken(), nil
	}
	first, token, err := list(2, "")
	if err != nil || fmt.Sprint(first) != "[item 0 item 1]" || token == "" {
		t.Fatalf("first page: %q, token %q, %v; want [item 0 item 1] and a token", first, token, err)
	}
	if _, err := s.Delete(ctx, connect.NewRequest(&gomsv1.DeleteRequest{Id: ids[2]})); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	rest, token, err := list(0, token)
	if err != nil || fmt.Sprint(rest) != "[item 3 item 4]" || token != "" {
		t.Errorf("next page after deleting item 2: %q, token %q, %v; want [item 3 item 4] and no token", rest, token, err)
	}
	wantCode := func(what string, err error, code connect.Code) {
		t.Helper()
		if connect.CodeOf(err) != code {
			t.Errorf("%s: %v, want %v", what, err, code)
		}
	}
	_, _, err = list(-1, "")
	wantCode("negative page size", err, connect.CodeInvalidArgument)
	_, _, err = list(1, "nope")
	wantCode("bad page token", err, connect.CodeInvalidArgument)
	_, err = s.Create(ctx, connect.NewRequest(&gomsv1.CreateRequest{Name: "item 0"}))
	wantCode("Create of a taken name", err, connect.CodeAlreadyExists)
	_, err = s.Update(ctx, connect.NewRequest(&gomsv1.UpdateRequest{Id: ids[0], Name: "item 1"}))
	wantCode("Update to a taken name", err, connect.CodeAlreadyExists)
	_, err = s.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{Id: ids[2]}))
	wantCode("Get of a deleted item", err, connect.CodeNotFound)
	_, err = s.Get(ctx, connect.NewRequest(&gomsv1.GetRequest{}))
	wantCode("Get without an id", err, connect.CodeInvalidArgument)
}
