//go:build linux

package main

import (
	"fmt"
	"strconv"
	"time"
)

// stormResult is what the storm reports: clones made (two proc events each),
// clones that failed, and how long it ran.
type stormResult struct {
	Clones, Fails, Ns int64
}

func (s stormResult) events() uint64 { return uint64(2 * s.Clones) }

// rate is the storm's own event rate in events per second.
func (s stormResult) rate() float64 {
	if s.Ns <= 0 {
		return 0
	}
	return float64(2*s.Clones) / (float64(s.Ns) / 1e9)
}

type storm struct{ c *child }

// startStorm starts an armed storm bounded by duration or by clone count
// (whichever is set), paced to rate events/s if rate > 0.
func startStorm(d time.Duration, clones, rate int64) (*storm, error) {
	exe, err := cProgram("storm")
	if err != nil {
		return nil, err
	}
	var env []string
	if d > 0 {
		env = append(env, "CNBENCH_STORM_NS="+strconv.FormatInt(d.Nanoseconds(), 10))
	}
	if clones > 0 {
		env = append(env, "CNBENCH_STORM_COUNT="+strconv.FormatInt(clones, 10))
	}
	if rate > 0 {
		env = append(env, "CNBENCH_STORM_RATE="+strconv.FormatInt(rate, 10))
	}
	c, err := spawnExe(exe, "storm", "storm", env)
	if err != nil {
		return nil, err
	}
	if _, err := c.line("armed", 10*time.Second); err != nil {
		c.finish(time.Second)
		return nil, err
	}
	return &storm{c: c}, nil
}

func (s *storm) pid() int { return s.c.pid() }

// run releases the storm and waits for its report.
func (s *storm) run(timeout time.Duration) (stormResult, error) {
	defer s.c.finish(5 * time.Second)
	if err := s.c.send("go"); err != nil {
		return stormResult{}, err
	}
	rest, err := s.c.line("clones=", timeout)
	if err != nil {
		return stormResult{}, err
	}
	var r stormResult
	if _, err := fmt.Sscanf("clones="+rest, "clones=%d fails=%d ns=%d", &r.Clones, &r.Fails, &r.Ns); err != nil {
		return stormResult{}, fmt.Errorf("storm report %q: %w", rest, err)
	}
	return r, nil
}

// abort kills an armed storm that will not be run.
func (s *storm) abort() { s.c.finish(0) }
