// Package store is the in-memory, ordered item store shared by the example
// services: server-assigned ids, unique keys, creation-order listing with
// opaque page tokens, and errors that already carry the right connect code.
package store

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"connectrpc.com/connect"
)

// Page sizes of List.
const (
	// DefaultPageSize is used when the caller asks for page size 0.
	DefaultPageSize = 50
	// MaxPageSize caps larger page sizes.
	MaxPageSize = 1000
)

// Change says what happened to a stored value.
type Change int

// The kinds of change reported to Options.OnChange.
const (
	// Created reports a new value.
	Created Change = iota + 1
	// Updated reports a value after its change.
	Updated
	// Deleted reports a value as it was before its removal.
	Deleted
)

// Options configures a Store.
type Options[T any] struct {
	// Key returns the uniqueness key of a value: no two stored values share
	// one. Required.
	Key func(T) string
	// Conflict builds the error returned when a value's key is taken; it
	// should carry connect.CodeAlreadyExists. Required.
	Conflict func(T) error
	// OnChange, when set, is called for every change while the write lock
	// is held, so that calls arrive in the order the changes were made. It
	// must not block and must not call back into the Store.
	OnChange func(Change, T)
}

// Store keeps values of T by server-assigned id, in creation order. It is
// safe for concurrent use. Values are copied in and out, so T should be a
// plain value type.
type Store[T any] struct {
	opts Options[T]

	mu    sync.RWMutex
	seq   uint64 // sequence of the newest value
	byID  map[string]*entry[T]
	byKey map[string]string // Options.Key -> id
	order []*entry[T]       // ascending seq
}

type entry[T any] struct {
	seq uint64
	id  string
	val T
}

// New returns an empty Store.
func New[T any](opts Options[T]) *Store[T] {
	return &Store[T]{
		opts:  opts,
		byID:  make(map[string]*entry[T]),
		byKey: make(map[string]string),
	}
}

// Create stores the value that build makes from a fresh id, unless its key
// is already taken.
func (s *Store[T]) Create(build func(id string) T) (T, error) {
	vals, err := s.create(1, func(_ int, id string) T { return build(id) }, false)
	if err != nil {
		var zero T
		return zero, err
	}
	return vals[0], nil
}

// CreateAll stores the n values that build makes from their index and a
// fresh id, all or none: if any key is taken, by a stored value or by an
// earlier value of the batch, nothing is stored and the error names the
// index of the first offending value.
func (s *Store[T]) CreateAll(n int, build func(i int, id string) T) ([]T, error) {
	return s.create(n, build, true)
}

func (s *Store[T]) create(n int, build func(int, string) T, indexed bool) ([]T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	vals := make([]T, n)
	ids := make([]string, n)
	batch := make(map[string]bool, n) // keys taken by earlier values of the batch
	fresh := make(map[string]bool, n) // ids drawn for earlier values of the batch
	for i := range n {
		id, err := s.newID(fresh)
		if err != nil {
			return nil, err
		}
		fresh[id] = true
		v := build(i, id)
		k := s.opts.Key(v)
		if _, taken := s.byKey[k]; taken || batch[k] {
			err := s.opts.Conflict(v)
			if indexed {
				err = AtIndex(i, err)
			}
			return nil, err
		}
		batch[k] = true
		vals[i], ids[i] = v, id
	}
	for i, v := range vals {
		s.seq++
		e := &entry[T]{seq: s.seq, id: ids[i], val: v}
		s.byID[e.id] = e
		s.byKey[s.opts.Key(v)] = e.id
		s.order = append(s.order, e)
		s.notify(Created, v)
	}
	return vals, nil
}

// Get returns the value stored under id.
func (s *Store[T]) Get(id string) (T, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, err := s.lookup(id)
	if err != nil {
		var zero T
		return zero, err
	}
	return e.val, nil
}

// Update replaces the value stored under id with change(old), unless the
// new key belongs to another value.
func (s *Store[T]) Update(id string, change func(old T) T) (T, error) {
	var zero T
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.lookup(id)
	if err != nil {
		return zero, err
	}
	v := change(e.val)
	oldKey, newKey := s.opts.Key(e.val), s.opts.Key(v)
	if owner, taken := s.byKey[newKey]; taken && owner != id {
		return zero, s.opts.Conflict(v)
	}
	delete(s.byKey, oldKey)
	s.byKey[newKey] = id
	e.val = v
	s.notify(Updated, v)
	return v, nil
}

// Delete removes the value stored under id and returns it.
func (s *Store[T]) Delete(id string) (T, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := s.lookup(id)
	if err != nil {
		var zero T
		return zero, err
	}
	delete(s.byID, id)
	delete(s.byKey, s.opts.Key(e.val))
	if i, found := s.index(e.seq); found {
		s.order = slices.Delete(s.order, i, i+1)
	}
	s.notify(Deleted, e.val)
	return e.val, nil
}

// List returns, oldest first, up to pageSize values that keep accepts (all
// of them when keep is nil), starting after the value pageToken points to,
// and the token of the next page, empty when there is none.
func (s *Store[T]) List(pageSize int32, pageToken string, keep func(T) bool) ([]T, string, error) {
	size, err := pageLimit(pageSize)
	if err != nil {
		return nil, "", err
	}
	after, err := decodeToken(pageToken)
	if err != nil {
		return nil, "", err
	}

	s.mu.RLock()
	defer s.mu.RUnlock()
	start, found := s.index(after)
	if found {
		start++
	}
	var (
		vals    []T
		lastSeq uint64
	)
	for _, e := range s.order[start:] {
		if keep != nil && !keep(e.val) {
			continue
		}
		if len(vals) == size {
			// Another value follows the full page: hand out a token.
			return vals, encodeToken(lastSeq), nil
		}
		vals = append(vals, e.val)
		lastSeq = e.seq
	}
	return vals, "", nil
}

// index returns where seq is, or would be, in s.order.
func (s *Store[T]) index(seq uint64) (int, bool) {
	return slices.BinarySearchFunc(s.order, seq, func(e *entry[T], seq uint64) int {
		switch {
		case e.seq < seq:
			return -1
		case e.seq > seq:
			return 1
		}
		return 0
	})
}

func (s *Store[T]) lookup(id string) (*entry[T], error) {
	if err := Required("id", id); err != nil {
		return nil, err
	}
	e, ok := s.byID[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("item %q not found", id))
	}
	return e, nil
}

func (s *Store[T]) notify(c Change, v T) {
	if s.opts.OnChange != nil {
		s.opts.OnChange(c, v)
	}
}

// newID returns an id that is neither stored nor in reserved. With 64
// random bits a clash is all but impossible; the retry only makes it
// harmless.
func (s *Store[T]) newID(reserved map[string]bool) (string, error) {
	for range 8 {
		var b [8]byte
		_, _ = rand.Read(b[:]) // never fails since Go 1.24
		id := hex.EncodeToString(b[:])
		if _, taken := s.byID[id]; !taken && !reserved[id] {
			return id, nil
		}
	}
	return "", connect.NewError(connect.CodeInternal, errors.New("could not draw a free item id"))
}

// Required returns an invalid_argument error when value is empty or only
// white space.
func Required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s must not be empty", field))
	}
	return nil
}

// AtIndex prefixes err's message with the position of the stream message
// that caused it, keeping its code.
func AtIndex(i int, err error) error {
	msg := err.Error()
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		msg = cerr.Message()
	}
	return connect.NewError(connect.CodeOf(err), fmt.Errorf("message %d: %s", i, msg))
}

func pageLimit(pageSize int32) (int, error) {
	switch {
	case pageSize < 0:
		return 0, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("page_size must not be negative, got %d", pageSize))
	case pageSize == 0:
		return DefaultPageSize, nil
	case pageSize > MaxPageSize:
		return MaxPageSize, nil
	}
	return int(pageSize), nil
}

// A page token is the sequence number of the last value of the previous
// page. It stays valid when that value is deleted, since listing resumes
// after the number, not after the value.
func encodeToken(seq uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, seq))
}

func decodeToken(token string) (uint64, error) {
	if token == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != 8 {
		return 0, connect.NewError(connect.CodeInvalidArgument,
			errors.New("page_token is not a token returned by List; start again with an empty page_token"))
	}
	return binary.BigEndian.Uint64(b), nil
}
