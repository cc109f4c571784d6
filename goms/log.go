package goms

import (
	"fmt"
	"log/slog"
	"os"
)

// Log configures goms's logging. Format and Level describe the logger
// goms makes when Config.Logger is nil; AccessLevel, AccessFile and
// AccessBuffer apply to the access log whatever the logger.
type Log struct {
	// Format is "text" (the default) or "json".
	Format string `yaml:"format"`
	// Level is the lowest level written: "debug", "info" (the default),
	// "warn" or "error".
	Level slog.Level `yaml:"level"`
	// AccessLevel is the level of the access log records, one per call.
	// Nil means debug, which keeps them out of a logger at info: a record
	// per call costs more CPU than the rest of the default interceptors
	// together. Set it to info to see every call.
	AccessLevel *slog.Level `yaml:"access_level"`
	// AccessFile, when set, sends the access log records, one JSON line
	// per call (every call, whatever AccessLevel), to this file (appended
	// to) instead of the logger. They go through a buffer of AccessBuffer
	// bytes that a goroutine writes out at least every 200ms, so that a
	// call does not wait on the disk: about a fifth of the CPU a record
	// through slog's JSON handler and an unbuffered file costs. Records
	// that do not fit while the disk lags are dropped and the count is
	// logged at warn level; the buffer is written out when the server
	// stops. Default: none, records go to the logger.
	AccessFile string `yaml:"access_file"`
	// AccessBuffer is the size of AccessFile's buffer, in bytes. Default
	// 1 MiB.
	AccessBuffer int `yaml:"access_buffer"`
}

// accessLevel returns the level of access log records.
func (l Log) accessLevel() slog.Level {
	if l.AccessLevel == nil {
		return slog.LevelDebug
	}
	return *l.AccessLevel
}

func (l Log) logger() (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: l.Level}
	switch l.Format {
	case "", "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("goms: log.format: %q: want \"text\" or \"json\"", l.Format)
	}
}
