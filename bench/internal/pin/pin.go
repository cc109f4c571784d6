// Package pin binds processes to CPUs, so that the servers under test and
// the load client do not compete for a core.
package pin

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxPasses bounds the passes over a process's threads: each pass binds
// the threads the previous one missed because they started meanwhile.
const maxPasses = 50

// Process binds every thread of process pid to cpus. Threads started
// later inherit the binding from the thread that starts them, so once all
// threads are bound the whole process stays on cpus.
func Process(pid int, cpus []int) error {
	if len(cpus) == 0 {
		return errors.New("pin: no CPU given")
	}
	var want unix.CPUSet
	want.Zero()
	for _, c := range cpus {
		want.Set(c)
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	for range maxPasses {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("pin: %w", err)
		}
		changed := false
		for _, e := range entries {
			tid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			var got unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &got); err != nil {
				continue // the thread has exited
			}
			if got == want {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &want); err != nil {
				if errors.Is(err, unix.ESRCH) {
					continue
				}
				return fmt.Errorf("pin: thread %d of process %d: %w", tid, pid, err)
			}
			changed = true
		}
		if !changed {
			return nil
		}
	}
	return fmt.Errorf("pin: process %d keeps starting unbound threads", pid)
}

// Available reports whether every CPU of cpus may be used by this process.
func Available(cpus []int) bool {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return false
	}
	return !slices.ContainsFunc(cpus, func(c int) bool { return !set.IsSet(c) })
}
