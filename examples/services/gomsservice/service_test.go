package gomsservice_test

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/reversTeam/go-ms/examples/services/gomsservice"
	"github.com/reversTeam/go-ms/examples/services/internal/servicetest"
	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
)

const unknownID = "0123456789abcdef"

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// create stores an item named name in s, failing the test on error.
func create(t *testing.T, s *gomsservice.Service, name string) *gomsv1.Item {
	t.Helper()
	res, err := s.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: name}))
	if err != nil {
		t.Fatalf("Create(%q): %v", name, err)
	}
	return res.Msg.GetItem()
}

// list returns one page of s, failing the test on error.
func list(t *testing.T, s *gomsservice.Service, size int32, token string) *gomsv1.ListResponse {
	t.Helper()
	res, err := s.List(t.Context(), connect.NewRequest(&gomsv1.ListRequest{PageSize: size, PageToken: token}))
	if err != nil {
		t.Fatalf("List(%d, %q): %v", size, token, err)
	}
	return res.Msg
}

func TestCreate(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	item := create(t, s, "first")

	if !idPattern.MatchString(item.GetId()) {
		t.Errorf("id %q is not 16 lowercase hex digits", item.GetId())
	}
	if item.GetName() != "first" {
		t.Errorf("name = %q, want %q", item.GetName(), "first")
	}
	if err := item.GetCreateTime().CheckValid(); err != nil {
		t.Errorf("create_time: %v", err)
	}
	if diff := cmp.Diff(item.GetCreateTime(), item.GetUpdateTime(), protocmp.Transform()); diff != "" {
		t.Errorf("update_time differs from create_time of a new item (-create +update):\n%s", diff)
	}
	if other := create(t, s, "second"); other.GetId() == item.GetId() {
		t.Errorf("two items share id %q", item.GetId())
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		itemName string
		code     connect.Code
		message  string
	}{
		{"empty name", "", connect.CodeInvalidArgument, "name must not be empty"},
		{"blank name", " \t\n", connect.CodeInvalidArgument, "name must not be empty"},
		{"name taken", "taken", connect.CodeAlreadyExists, `an item named "taken" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := gomsservice.New()
			create(t, s, "taken")
			_, err := s.Create(t.Context(), connect.NewRequest(&gomsv1.CreateRequest{Name: tt.itemName}))
			servicetest.WantError(t, err, tt.code, tt.message)
		})
	}
}

func TestCreateConcurrentSameName(t *testing.T) {
	t.Parallel()
	const callers = 16
	s := gomsservice.New()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		oks  int
		errs []error
	)
	for range callers {
		wg.Go(func() {
			_, err := s.Create(context.Background(), connect.NewRequest(&gomsv1.CreateRequest{Name: "same"}))
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				oks++
			} else {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if oks != 1 {
		t.Fatalf("%d creates succeeded, want exactly 1", oks)
	}
	for _, err := range errs {
		servicetest.WantError(t, err, connect.CodeAlreadyExists, `"same"`)
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	item := create(t, s, "a")

	t.Run("found", func(t *testing.T) {
		t.Parallel()
		res, err := s.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: item.GetId()}))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(item, res.Msg.GetItem(), protocmp.Transform()); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
	})
	for _, tt := range []struct {
		name, id string
		code     connect.Code
		message  string
	}{
		{"empty id", "", connect.CodeInvalidArgument, "id must not be empty"},
		{"unknown id", unknownID, connect.CodeNotFound, `item "` + unknownID + `" not found`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: tt.id}))
			servicetest.WantError(t, err, tt.code, tt.message)
		})
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()

	t.Run("renames", func(t *testing.T) {
		t.Parallel()
		s := gomsservice.New()
		item := create(t, s, "old")
		res, err := s.Update(t.Context(), connect.NewRequest(&gomsv1.UpdateRequest{Id: item.GetId(), Name: "new"}))
		if err != nil {
			t.Fatal(err)
		}
		got := res.Msg.GetItem()
		want := &gomsv1.Item{Id: item.GetId(), Name: "new", CreateTime: item.GetCreateTime()}
		if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&gomsv1.Item{}, "update_time")); diff != "" {
			t.Errorf("Update (-want +got):\n%s", diff)
		}
		if got.GetUpdateTime().AsTime().Before(item.GetUpdateTime().AsTime()) {
			t.Errorf("update_time went back from %v to %v", item.GetUpdateTime().AsTime(), got.GetUpdateTime().AsTime())
		}
		// The old name is free again.
		create(t, s, "old")
	})

	t.Run("keeps its own name", func(t *testing.T) {
		t.Parallel()
		s := gomsservice.New()
		item := create(t, s, "same")
		if _, err := s.Update(t.Context(), connect.NewRequest(&gomsv1.UpdateRequest{Id: item.GetId(), Name: "same"})); err != nil {
			t.Fatal(err)
		}
	})

	tests := []struct {
		name     string
		id       func(item *gomsv1.Item) string
		itemName string
		code     connect.Code
		message  string
	}{
		{"empty name", (*gomsv1.Item).GetId, "", connect.CodeInvalidArgument, "name must not be empty"},
		{"blank name", (*gomsv1.Item).GetId, "  ", connect.CodeInvalidArgument, "name must not be empty"},
		{"empty id", func(*gomsv1.Item) string { return "" }, "x", connect.CodeInvalidArgument, "id must not be empty"},
		{"unknown id", func(*gomsv1.Item) string { return unknownID }, "x", connect.CodeNotFound, `item "` + unknownID + `" not found`},
		{"name of another item", (*gomsv1.Item).GetId, "other", connect.CodeAlreadyExists, `an item named "other" already exists`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := gomsservice.New()
			item := create(t, s, "mine")
			create(t, s, "other")
			_, err := s.Update(t.Context(), connect.NewRequest(&gomsv1.UpdateRequest{Id: tt.id(item), Name: tt.itemName}))
			servicetest.WantError(t, err, tt.code, tt.message)
			// A failed update changes nothing.
			res, err := s.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: item.GetId()}))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(item, res.Msg.GetItem(), protocmp.Transform()); diff != "" {
				t.Errorf("item changed by a failed update (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	item := create(t, s, "doomed")
	del := func(id string) error {
		_, err := s.Delete(t.Context(), connect.NewRequest(&gomsv1.DeleteRequest{Id: id}))
		return err
	}

	if err := del(item.GetId()); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	notFound := fmt.Sprintf("item %q not found", item.GetId())
	_, err := s.Get(t.Context(), connect.NewRequest(&gomsv1.GetRequest{Id: item.GetId()}))
	servicetest.WantError(t, err, connect.CodeNotFound, notFound)
	servicetest.WantError(t, del(item.GetId()), connect.CodeNotFound, notFound)
	servicetest.WantError(t, del(""), connect.CodeInvalidArgument, "id must not be empty")
	// The name is free again.
	create(t, s, "doomed")
}

func TestListPages(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	var all []*gomsv1.Item
	for i := range 7 {
		all = append(all, create(t, s, fmt.Sprintf("item-%d", i)))
	}

	var (
		pages [][]*gomsv1.Item
		token string
	)
	for range 10 { // far more than the 3 expected pages
		page := list(t, s, 3, token)
		pages = append(pages, page.GetItems())
		token = page.GetNextPageToken()
		if token == "" {
			break
		}
		if len(pages) == 1 {
			// Deleting the last item of a page must not break its token.
			if _, err := s.Delete(t.Context(), connect.NewRequest(&gomsv1.DeleteRequest{Id: all[2].GetId()})); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := [][]*gomsv1.Item{all[0:3], all[3:6], all[6:7]}
	if diff := cmp.Diff(want, pages, protocmp.Transform()); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestListPageSize(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	for i := range 1005 {
		create(t, s, fmt.Sprintf("item-%d", i))
	}
	tests := []struct {
		size      int32
		wantItems int
	}{
		{size: 0, wantItems: 50},
		{size: 1, wantItems: 1},
		{size: 1000, wantItems: 1000},
		{size: 1001, wantItems: 1000},
		{size: 1 << 30, wantItems: 1000},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			t.Parallel()
			page := list(t, s, tt.size, "")
			if got := len(page.GetItems()); got != tt.wantItems {
				t.Errorf("got %d items, want %d", got, tt.wantItems)
			}
			if page.GetNextPageToken() == "" {
				t.Error("next_page_token is empty before the last page")
			}
		})
	}
}

func TestListEmpty(t *testing.T) {
	t.Parallel()
	page := list(t, gomsservice.New(), 0, "")
	if diff := cmp.Diff(&gomsv1.ListResponse{}, page, protocmp.Transform()); diff != "" {
		t.Errorf("List of an empty store (-want +got):\n%s", diff)
	}
}

func TestListErrors(t *testing.T) {
	t.Parallel()
	s := gomsservice.New()
	create(t, s, "a")
	tests := []struct {
		name    string
		req     *gomsv1.ListRequest
		message string
	}{
		{"negative page size", &gomsv1.ListRequest{PageSize: -1}, "page_size must not be negative"},
		{"token not base64", &gomsv1.ListRequest{PageToken: "not a token!"}, "page_token"},
		{"token of the wrong length", &gomsv1.ListRequest{PageToken: "AAAA"}, "page_token"},
		{"token with padding", &gomsv1.ListRequest{PageToken: "AAAAAAAAAAE="}, "page_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := s.List(t.Context(), connect.NewRequest(tt.req))
			servicetest.WantError(t, err, connect.CodeInvalidArgument, tt.message)
		})
	}
}
