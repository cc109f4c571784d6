// Package testservice implements the project's reference APIs,
// goms.v1.GoMsService and child.v1.ChildService (proto/goms/v1 and
// proto/child/v1), in memory, for goms's own tests: the framework's tests
// exercise its REST rules, NO_SIDE_EFFECTS methods, streams and validation
// rules through these services without depending on the examples, as
// connect-go's tests have their own ping service.
package testservice

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	"connectrpc.com/connect"

	gomsv1 "github.com/reversTeam/go-ms/gen/goms/v1"
)

// Page sizes of List.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// table keeps items by their server-assigned id, no two under the same
// key, in creation order. Items are never modified once stored (an update
// stores a new one), so they are handed out as they are.
type table[T interface{ GetId() string }] struct {
	key      func(T) string
	conflict func(T) error
	changed  func(change gomsv1.ChangeType, item T) // called with mu held, in order; may be nil

	mu    sync.RWMutex
	items map[string]T
	ids   map[string]string // key -> id
	order []string          // ids in creation order; deleted ones are skipped
}

func newTable[T interface{ GetId() string }](key func(T) string, conflict func(T) error) *table[T] {
	return &table[T]{key: key, conflict: conflict, items: map[string]T{}, ids: map[string]string{}}
}

// create stores the n items that build makes from their index and a fresh
// id: all of them, or none when a key is taken.
func (t *table[T]) create(n int, build func(i int, id string) T) ([]T, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	items := make([]T, n)
	batch := map[string]bool{} // the ids and keys of items[:i]
	for i := range items {
		id := fmt.Sprintf("%016x", rand.Uint64())
		for t.has(id) || batch[id] {
			id = fmt.Sprintf("%016x", rand.Uint64())
		}
		items[i] = build(i, id)
		k := t.key(items[i])
		if _, taken := t.ids[k]; taken || batch["key "+k] {
			return nil, t.conflict(items[i])
		}
		batch[id], batch["key "+k] = true, true
	}
	for _, item := range items {
		t.store(item)
		t.order = append(t.order, item.GetId())
		t.notify(gomsv1.ChangeType_CHANGE_TYPE_CREATED, item)
	}
	return items, nil
}

func (t *table[T]) has(id string) bool {
	_, ok := t.items[id]
	return ok
}

func (t *table[T]) store(item T) {
	t.items[item.GetId()], t.ids[t.key(item)] = item, item.GetId()
}

func (t *table[T]) notify(change gomsv1.ChangeType, item T) {
	if t.changed != nil {
		t.changed(change, item)
	}
}

// get returns the item stored under id.
func (t *table[T]) get(id string) (T, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.lookup(id)
}

func (t *table[T]) lookup(id string) (T, error) {
	item, ok := t.items[id]
	if err := required("id", id); err != nil {
		return item, err
	}
	if !ok {
		return item, connect.NewError(connect.CodeNotFound, fmt.Errorf("item %q not found", id))
	}
	return item, nil
}

// update replaces the item stored under id with change(old), unless the
// new item's key belongs to another.
func (t *table[T]) update(id string, change func(old T) T) (T, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, err := t.lookup(id)
	if err != nil {
		return old, err
	}
	item := change(old)
	if owner, taken := t.ids[t.key(item)]; taken && owner != id {
		var zero T
		return zero, t.conflict(item)
	}
	delete(t.ids, t.key(old))
	t.store(item)
	t.notify(gomsv1.ChangeType_CHANGE_TYPE_UPDATED, item)
	return item, nil
}

// remove deletes the item stored under id.
func (t *table[T]) remove(id string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	item, err := t.lookup(id)
	if err != nil {
		return err
	}
	delete(t.items, id)
	delete(t.ids, t.key(item))
	t.notify(gomsv1.ChangeType_CHANGE_TYPE_DELETED, item)
	return nil
}

// list returns, oldest first, up to pageSize items that keep accepts (all
// when keep is nil), from the position pageToken names, and the token of
// the next page: empty when there is none.
func (t *table[T]) list(pageSize int32, pageToken string, keep func(T) bool) ([]T, string, error) {
	size := int(pageSize)
	switch {
	case pageSize < 0:
		return nil, "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("page_size must not be negative, got %d", pageSize))
	case pageSize == 0:
		size = defaultPageSize
	case pageSize > maxPageSize:
		size = maxPageSize
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	// A token is a position in t.order, which only grows.
	start, err := strconv.Atoi(pageToken)
	if pageToken == "" {
		start, err = 0, nil
	}
	if err != nil || start < 0 || start > len(t.order) {
		return nil, "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("page_token %q is not a token List returned", pageToken))
	}
	var items []T
	for i, id := range t.order[start:] {
		item, ok := t.items[id]
		if !ok || (keep != nil && !keep(item)) {
			continue
		}
		if len(items) == size {
			return items, strconv.Itoa(start + i), nil
		}
		items = append(items, item)
	}
	return items, "", nil
}

// required returns an invalid_argument error when value is empty or only
// white space.
func required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s must not be empty", field))
	}
	return nil
}
