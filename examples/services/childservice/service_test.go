package childservice_test

import (
	"fmt"
	"net/http"
	"regexp"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/reversTeam/go-ms/examples/services/childservice"
	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/examples/services/internal/servicetest"
	childv1 "github.com/reversTeam/go-ms/gen/child/v1"
	"github.com/reversTeam/go-ms/gen/child/v1/childv1connect"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
	"github.com/reversTeam/go-ms/gen/goms/v1/gomsv1connect"
)

const unknownID = "0123456789abcdef"

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// fixture is a child service whose parents live in a goms service reached
// over a real h2c connection.
type fixture struct {
	parents gomsv1connect.GoMsServiceClient
	child   *childservice.Service
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(gomsv1connect.NewGoMsServiceHandler(gomsservice.New()))
	baseURL, httpClient := servicetest.Start(t, mux)
	parents := gomsv1connect.NewGoMsServiceClient(httpClient, baseURL)
	return fixture{parents: parents, child: childservice.New(parents)}
}

// parent creates a goms item named name and returns its id.
func (f fixture) parent(t *testing.T, name string) string {
	t.Helper()
	res, err := f.parents.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
	if err != nil {
		t.Fatalf("creating parent %q: %v", name, err)
	}
	return res.Msg.GetItem().GetId()
}

// create stores a child, failing the test on error.
func (f fixture) create(t *testing.T, parentID, name string) *childv1.Item {
	t.Helper()
	res, err := f.child.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: parentID, Name: name}))
	if err != nil {
		t.Fatalf("Create(%q, %q): %v", parentID, name, err)
	}
	return res.Msg.GetItem()
}

func TestCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.parent(t, "p")
	item := f.create(t, p, "c")

	if !idPattern.MatchString(item.GetId()) {
		t.Errorf("id %q is not 16 lowercase hex digits", item.GetId())
	}
	want := &childv1.Item{Id: item.GetId(), ParentId: p, Name: "c", CreateTime: item.GetCreateTime(), UpdateTime: item.GetCreateTime()}
	if diff := cmp.Diff(want, item, protocmp.Transform()); diff != "" {
		t.Errorf("Create (-want +got):\n%s", diff)
	}
	if err := item.GetCreateTime().CheckValid(); err != nil {
		t.Errorf("create_time: %v", err)
	}
	res, err := f.child.Get(t.Context(), connect.NewRequest(&childv1.GetRequest{Id: item.GetId()}))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(item, res.Msg.GetItem(), protocmp.Transform()); diff != "" {
		t.Errorf("Get after Create (-want +got):\n%s", diff)
	}
	// Names are unique per parent only.
	f.create(t, f.parent(t, "other parent"), "c")
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := f.parent(t, "p")
	f.create(t, p, "taken")

	tests := []struct {
		name     string
		parentID string
		itemName string
		code     connect.Code
		message  string
	}{
		{"empty parent id", "", "c", connect.CodeInvalidArgument, "parent_id must not be empty"},
		{"empty name", p, "", connect.CodeInvalidArgument, "name must not be empty"},
		{"blank name", p, "\t ", connect.CodeInvalidArgument, "name must not be empty"},
		{"missing parent", unknownID, "c", connect.CodeFailedPrecondition, `parent item "` + unknownID + `" does not exist`},
		{"name taken under the parent", p, "taken", connect.CodeAlreadyExists, `already has a child named "taken"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := f.child.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: tt.parentID, Name: tt.itemName}))
			servicetest.WantError(t, err, tt.code, tt.message)
		})
	}
}

func TestCreateParentUnavailable(t *testing.T) {
	t.Parallel()
	parents := gomsv1connect.NewGoMsServiceClient(servicetest.NewClient(), servicetest.ClosedURL(t))
	s := childservice.New(parents)
	_, err := s.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: unknownID, Name: "c"}))
	servicetest.WantError(t, err, connect.CodeUnavailable, fmt.Sprintf("checking parent %q", unknownID))
}

// TestCreateOverTheWire checks that the codes survive a second hop: caller
// -> child service -> goms service.
func TestCreateOverTheWire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.Handle(childv1connect.NewChildServiceHandler(f.child))
	baseURL, httpClient := servicetest.Start(t, mux)
	client := childv1connect.NewChildServiceClient(httpClient, baseURL)

	p := f.parent(t, "p")
	res, err := client.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: p, Name: "c"}))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got := res.Msg.GetItem().GetParentId(); got != p {
		t.Errorf("parent_id = %q, want %q", got, p)
	}
	_, err = client.Create(t.Context(), connect.NewRequest(&childv1.CreateRequest{ParentId: unknownID, Name: "c"}))
	servicetest.WantError(t, err, connect.CodeFailedPrecondition, `parent item "`+unknownID+`" does not exist`)
}

func TestGetUpdateDelete(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p, q := f.parent(t, "p"), f.parent(t, "q")
	item := f.create(t, p, "a")
	f.create(t, p, "b")
	f.create(t, q, "c")

	update := func(id, name string) (*childv1.Item, error) {
		res, err := f.child.Update(t.Context(), connect.NewRequest(&childv1.UpdateRequest{Id: id, Name: name}))
		if err != nil {
			return nil, err
		}
		return res.Msg.GetItem(), nil
	}

	t.Run("errors", func(t *testing.T) {
		notFound := `item "` + unknownID + `" not found`
		_, err := f.child.Get(t.Context(), connect.NewRequest(&childv1.GetRequest{}))
		servicetest.WantError(t, err, connect.CodeInvalidArgument, "id must not be empty")
		_, err = f.child.Get(t.Context(), connect.NewRequest(&childv1.GetRequest{Id: unknownID}))
		servicetest.WantError(t, err, connect.CodeNotFound, notFound)
		_, err = update(unknownID, "x")
		servicetest.WantError(t, err, connect.CodeNotFound, notFound)
		_, err = update(item.GetId(), " ")
		servicetest.WantError(t, err, connect.CodeInvalidArgument, "name must not be empty")
		_, err = update(item.GetId(), "b")
		servicetest.WantError(t, err, connect.CodeAlreadyExists, `already has a child named "b"`)
		_, err = f.child.Delete(t.Context(), connect.NewRequest(&childv1.DeleteRequest{Id: unknownID}))
		servicetest.WantError(t, err, connect.CodeNotFound, notFound)
	})

	t.Run("rename to a name used under another parent", func(t *testing.T) {
		got, err := update(item.GetId(), "c")
		if err != nil {
			t.Fatal(err)
		}
		want := &childv1.Item{Id: item.GetId(), ParentId: p, Name: "c", CreateTime: item.GetCreateTime()}
		if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&childv1.Item{}, "update_time")); diff != "" {
			t.Errorf("Update (-want +got):\n%s", diff)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if _, err := f.child.Delete(t.Context(), connect.NewRequest(&childv1.DeleteRequest{Id: item.GetId()})); err != nil {
			t.Fatal(err)
		}
		_, err := f.child.Get(t.Context(), connect.NewRequest(&childv1.GetRequest{Id: item.GetId()}))
		servicetest.WantError(t, err, connect.CodeNotFound, item.GetId())
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p, q := f.parent(t, "p"), f.parent(t, "q")
	pa, qa := f.create(t, p, "a"), f.create(t, q, "a")
	pb, qb := f.create(t, p, "b"), f.create(t, q, "b")
	pc := f.create(t, p, "c")

	// pages lists every page of size items of parentID.
	pages := func(t *testing.T, parentID string, size int32) [][]*childv1.Item {
		t.Helper()
		var (
			all   [][]*childv1.Item
			token string
		)
		for range 10 { // far more pages than any case needs
			res, err := f.child.List(t.Context(), connect.NewRequest(&childv1.ListRequest{ParentId: parentID, PageSize: size, PageToken: token}))
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			all = append(all, res.Msg.GetItems())
			if token = res.Msg.GetNextPageToken(); token == "" {
				return all
			}
		}
		t.Fatal("List never reached its last page")
		return nil
	}

	tests := []struct {
		name     string
		parentID string
		size     int32
		want     [][]*childv1.Item
	}{
		{"all", "", 0, [][]*childv1.Item{{pa, qa, pb, qb, pc}}},
		{"all in pages", "", 2, [][]*childv1.Item{{pa, qa}, {pb, qb}, {pc}}},
		{"one parent in pages", p, 2, [][]*childv1.Item{{pa, pb}, {pc}}},
		// A full page that ends the list carries no token.
		{"last page full", q, 2, [][]*childv1.Item{{qa, qb}}},
		{"parent without children", unknownID, 0, [][]*childv1.Item{{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := pages(t, tt.parentID, tt.size)
			if diff := cmp.Diff(tt.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListErrors(t *testing.T) {
	t.Parallel()
	s := childservice.New(nil) // List never calls the parent service
	tests := []struct {
		name    string
		req     *childv1.ListRequest
		message string
	}{
		{"negative page size", &childv1.ListRequest{PageSize: -5}, "page_size must not be negative"},
		{"bad token", &childv1.ListRequest{PageToken: "%%%"}, "page_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.List(t.Context(), connect.NewRequest(tt.req))
			servicetest.WantError(t, err, connect.CodeInvalidArgument, tt.message)
		})
	}
}
