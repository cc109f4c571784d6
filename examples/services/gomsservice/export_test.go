package gomsservice

// WatchBuffer is how many changes a watcher may lag behind.
const WatchBuffer = watchBuffer

// Watchers returns the number of running Watch calls, so that tests can
// wait for a watcher to subscribe before making changes.
func (s *Service) Watchers() int { return s.hub.len() }
