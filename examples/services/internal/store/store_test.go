package store

import (
	"math"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
)

type value struct{ id, key string }

func newStore(changes *[]string) *Store[value] {
	return New(Options[value]{
		Key: func(v value) string { return v.key },
		Conflict: func(value) error {
			return connect.NewError(connect.CodeAlreadyExists, nil)
		},
		OnChange: func(c Change, v value) {
			if changes != nil {
				*changes = append(*changes, []string{Created: "created", Updated: "updated", Deleted: "deleted"}[c]+" "+v.key)
			}
		},
	})
}

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, seq := range []uint64{0, 1, 1 << 40, math.MaxUint64} {
		got, err := decodeToken(encodeToken(seq))
		if err != nil || got != seq {
			t.Errorf("decodeToken(encodeToken(%d)) = %d, %v", seq, got, err)
		}
	}
}

func TestListAfterLastSequence(t *testing.T) {
	t.Parallel()
	s := newStore(nil)
	if _, err := s.Create(func(id string) value { return value{id, "a"} }); err != nil {
		t.Fatal(err)
	}
	vals, next, err := s.List(0, encodeToken(math.MaxUint64), nil)
	if err != nil || len(vals) != 0 || next != "" {
		t.Errorf("List past the end = %v, %q, %v; want nothing", vals, next, err)
	}
}

func TestOnChangeOrder(t *testing.T) {
	t.Parallel()
	var changes []string
	s := newStore(&changes)
	a, err := s.Create(func(id string) value { return value{id, "a"} })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateAll(2, func(i int, id string) value { return value{id, []string{"b", "b"}[i]} }); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("CreateAll with a repeated key: got %v, want already_exists", err)
	}
	if _, err := s.Update(a.id, func(v value) value { v.key = "z"; return v }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(a.id); err != nil {
		t.Fatal(err)
	}
	// The failed batch reports nothing.
	want := []string{"created a", "updated z", "deleted z"}
	if diff := cmp.Diff(want, changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}
