//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// medians merges the runs: for each row, the median of each value.
func medians(runs [][]measure) []measure {
	type key struct{ s, r string }
	var order []key
	vals := map[key]map[string][]float64{}
	notes := map[key]string{}
	for _, run := range runs {
		for _, m := range run {
			k := key{m.Section, m.Row}
			if vals[k] == nil {
				vals[k] = map[string][]float64{}
				order = append(order, k)
			}
			for n, v := range m.Vals {
				vals[k][n] = append(vals[k][n], v)
			}
			if m.Note != "" {
				notes[k] = m.Note
			}
		}
	}
	var out []measure
	for _, k := range order {
		m := measure{Section: k.s, Row: k.r, Vals: map[string]float64{}, Note: notes[k]}
		for n, vs := range vals[k] {
			m.Vals[n] = median(vs)
		}
		out = append(out, m)
	}
	return out
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type column struct {
	key, head string
	format    func(float64) string
}

func fInt(v float64) string   { return fmt.Sprintf("%.0f", v) }
func fK(v float64) string     { return fmt.Sprintf("%.1fk", v/1e3) }
func fRatio(v float64) string { return fmt.Sprintf("%.2fx", v) }
func fPct(v float64) string   { return fmt.Sprintf("%.2f%%", v) }
func f1(v float64) string     { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string     { return fmt.Sprintf("%.2f", v) }

var (
	drainCols = []column{
		{"rate", "drain events/s", fK}, {"x_rate", "× ref", fRatio},
		{"cpu_rate", "events per CPU-second", fK}, {"x_cpu_rate", "× ref", fRatio},
		{"cpu", "CPU ns/event", fInt}, {"x_cpu", "CPU × ref", fRatio},
		{"user", "user ns/event", fInt}, {"sys", "sys ns/event", fInt},
		{"allocs", "allocs/event", f2}, {"bytes", "B/event", f1}, {"rss", "peak RSS MiB", f1},
	}
	liveCols = []column{
		{"received", "received", fInt}, {"expected", "expected", fInt}, {"loss", "loss", fPct},
		{"enobufs", "ENOBUFS", fInt}, {"restarts", "restarts", fInt},
		{"cpu", "CPU ns/event", fInt}, {"x_cpu", "CPU × ref", fRatio},
		{"user", "user ns/event", fInt}, {"sys", "sys ns/event", fInt},
		{"allocs", "allocs/event", f2}, {"bytes", "B/event", f1}, {"rss", "peak RSS MiB", f1},
		{"rcvbuf", "SO_RCVBUF", fInt},
	}
	aloneCols = append([]column{{"storm_rate", "storm events/s", fK}}, liveCols...)
	uniCols   = []column{
		{"msgs", "msgs/s", fK}, {"x_msgs", "× ref", fRatio}, {"mbs", "MB/s", f1}, {"delivered", "delivered", fPct},
		{"recv_cpu", "recv CPU ns/msg", fInt}, {"send_cpu", "send CPU ns/msg", fInt},
		{"recv_allocs", "recv allocs/msg", f2}, {"send_allocs", "send allocs/msg", f2},
	}
)

var sectionTitles = map[string]string{
	"drain":            "Drain capacity: the same queued events, each receiver released alone",
	"drain-alone":      "Drain capacity, each receiver the only one subscribed during its storm",
	"shared":           "Live storm, all receivers subscribed at once, default receive buffer",
	"shared-4m":        "Live storm, all receivers subscribed at once, large receive buffer",
	"shared-noenobufs": "Live storm, all receivers at once, default buffer, NETLINK_NO_ENOBUFS",
	"alone":            "Live storm, each receiver alone, default receive buffer, storm paced",
	"alone-4m":         "Live storm, each receiver alone, large receive buffer, storm paced",
}

func printReport(w io.Writer, o *suiteOpts, ms []measure) {
	fmt.Fprintf(w, "## connector benchmarks\n\n%s\n", machine())
	fmt.Fprintf(w, "load average (1, 5, 15 min) at the start: %s, at the end: %s; the suite and its processes ran at nice %d  \n", o.loadStart, o.loadEnd, o.nice)
	fmt.Fprintf(w, "runs: %d, drain rounds per run: %d, unicast rounds per run: %d (medians; ratios are taken within each round, then the median)  \n", o.runs, o.drainRounds, o.unicastRounds)
	fmt.Fprintf(w, "receivers: batch %d datagrams per recvmmsg, %d-byte datagram buffers; live storms %v; large buffer %d bytes (SO_RCVBUFFORCE); drain buffer %d bytes\n\n",
		o.batch, o.msgbuf, o.duration, o.bigbuf, o.drainBuf)

	bySection := map[string][]measure{}
	var sections []string
	for _, m := range ms {
		if bySection[m.Section] == nil {
			sections = append(sections, m.Section)
		}
		bySection[m.Section] = append(bySection[m.Section], m)
	}
	for _, s := range sections {
		rows := bySection[s]
		switch {
		case s == "storm":
			v := rows[0].Vals
			fmt.Fprintf(w, "### Storm generator\n\nthread clones (one FORK and one EXIT event each), nobody of ours listening: **%s events/s** (%s events in %v, %s failed clones)\n\n",
				fK(v["rate"]), fInt(v["events"]), o.duration, fInt(v["fails"]))
		case s == "drain" || s == "drain-alone":
			fmt.Fprintf(w, "### %s\n\n%s events queued while every receiver was stopped (SIGSTOP); storm %s events/s\n\n",
				sectionTitles[s], fInt(rows[0].Vals["expected"]), fK(rows[0].Vals["storm_rate"]))
			table(w, rows, drainCols)
		case strings.HasPrefix(s, "unicast-"):
			fmt.Fprintf(w, "### Userspace unicast by port id, %s-byte payloads\n\n", strings.TrimPrefix(s, "unicast-"))
			table(w, rows, uniCols)
		case strings.HasPrefix(s, "alone"):
			fmt.Fprintf(w, "### %s\n\n", sectionTitles[s])
			table(w, rows, aloneCols)
		default:
			fmt.Fprintf(w, "### %s\n\nstorm %s events/s\n\n", sectionTitles[s], fK(rows[0].Vals["storm_rate"]))
			table(w, rows, liveCols)
		}
	}
	printFailures(w, o)
}

// printFailures lists the measurements a contestant failed (see
// contestantFailed); their rows are medians of the other runs.
func printFailures(w io.Writer, o *suiteOpts) {
	if len(o.failures) == 0 {
		return
	}
	fmt.Fprint(w, "### Failed measurements\n\n")
	for _, f := range o.failures {
		fmt.Fprintf(w, "* %s\n", f)
	}
	fmt.Fprintln(w)
}

func table(w io.Writer, rows []measure, cols []column) {
	var b strings.Builder
	b.WriteString("| receiver |")
	ref := refRow(rows)
	for _, c := range cols {
		b.WriteString(" " + strings.ReplaceAll(c.head, "ref", ref) + " |")
	}
	b.WriteString("\n|---|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		b.WriteString("| " + r.Row + " |")
		for _, c := range cols {
			v, ok := r.Vals[c.key]
			s := "–"
			if ok {
				s = c.format(v)
			}
			b.WriteString(" " + s + " |")
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}

// machine describes where the numbers come from.
func machine() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("machine: Linux %s, %s, %d CPUs, %s; net.core.rmem_default %s, rmem_max %s  \n",
		unix.ByteSliceToString(u.Release[:]), cpu, runtime.NumCPU(), runtime.Version(),
		read("/proc/sys/net/core/rmem_default"), read("/proc/sys/net/core/rmem_max"))
}
