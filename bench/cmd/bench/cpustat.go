package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc/stat, fixed at 100 on Linux whatever the
// kernel's own tick.
const userHZ = 100

// cpuTimes is the time some CPUs spent busy, and in all, from /proc/stat.
type cpuTimes struct {
	busy, total time.Duration
}

// readCPUTimes sums the /proc/stat lines of cpus.
func readCPUTimes(cpus []int) (cpuTimes, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	want := make(map[string]bool, len(cpus))
	for _, c := range cpus {
		want["cpu"+strconv.Itoa(c)] = true
	}
	var t cpuTimes
	found := 0
	for l := range strings.Lines(string(data)) {
		f := strings.Fields(l)
		if len(f) < 9 || !want[f[0]] {
			continue
		}
		found++
		var v [8]int64 // user nice system idle iowait irq softirq steal
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return cpuTimes{}, fmt.Errorf("/proc/stat: %s: %w", f[0], err)
			}
		}
		busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		t.busy += time.Duration(busy) * time.Second / userHZ
		t.total += time.Duration(busy+v[3]+v[4]) * time.Second / userHZ
	}
	if found != len(cpus) {
		return cpuTimes{}, fmt.Errorf("/proc/stat: found %d of CPUs %v", found, cpus)
	}
	return t, nil
}

// otherLoad returns the share of the CPUs' time between a and b that went
// to other processes than the one that used own of it.
func otherLoad(a, b cpuTimes, own time.Duration) float64 {
	total := b.total - a.total
	if total <= 0 {
		return 0
	}
	return max(float64(b.busy-a.busy-own)/float64(total), 0)
}
