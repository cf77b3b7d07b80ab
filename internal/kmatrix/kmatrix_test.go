package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cnlink/connector/internal/kmatrix/guest"
)

func TestCompareDebVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"6.1.192-1", "6.1.192-1", 0},
		{"6.1.192-2", "6.1.192-1", 1},
		{"6.1.99-1", "6.1.192-1", -1},
		{"6.12.118-1", "6.12.117-1~deb12u1", 1},
		{"6.12.117-1~deb12u1", "6.12.117-1", -1},
		{"7.3.4-1~bpo13+1", "7.3.4-1", -1},
		{"7.3.4-1~bpo13+2", "7.3.4-1~bpo13+1", 1},
		{"1:1.0-1", "2.0-1", 1},
		{"1.0~rc1-1", "1.0-1", -1},
		{"1.0a-1", "1.0-1", 1},
		{"1.0+x-1", "1.0a-1", 1},
		{"1.00-1", "1.0-1", 0},
		{"2.0", "2.0-0", 0},
	}
	for _, tt := range tests {
		if got := compareDebVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareDebVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareDebVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareDebVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestVersionMatches(t *testing.T) {
	tests := []struct {
		v, spec string
		want    bool
	}{
		{"6.1.192-1", "6.1", true},
		{"6.12.117-1", "6.1", false},
		{"6.12.117-1~deb12u1", "6.12", true},
		{"6.12.117-1~deb12u1", "6.12.117", true},
		{"6.12.117-1~deb12u1", "6.12.117-1", true},
		{"6.12.117-1~deb12u1", "6.12.117-1~deb12u1", true},
		{"6.12.117-1", "6.12.11", false},
		{"7.3.4-1~bpo13+1", "7", true},
		{"6.1.0-56", "6.1", true},
		{"6.12.118+deb13", "6.12", true},
	}
	for _, tt := range tests {
		if got := versionMatches(tt.v, tt.spec); got != tt.want {
			t.Errorf("versionMatches(%q, %q) = %v, want %v", tt.v, tt.spec, got, tt.want)
		}
	}
}

func TestMajorMinor(t *testing.T) {
	for in, want := range map[string]string{
		"6.1": "6.1", "6.12.117": "6.12", "6.12.117-1~deb12u1": "6.12", "7": "7", "7.": "7", "6.1-x": "6.1",
	} {
		if got := majorMinor(in); got != want {
			t.Errorf("majorMinor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKernelNameRE(t *testing.T) {
	tests := []struct{ name, kind, abi string }{
		{"linux-image-6.1.0-56-amd64", "image", "6.1.0-56"},
		{"linux-image-6.12.117+deb12-amd64", "image", "6.12.117+deb12"},
		{"linux-image-6.12.115+deb13.1-amd64", "image", "6.12.115+deb13.1"},
		{"linux-binary-7.3.4+deb13-amd64", "binary", "7.3.4+deb13"},
		{"linux-base-7.3.4+deb13-amd64", "base", "7.3.4+deb13"},
		{"linux-image-7.3.4+deb13-cloud-amd64", "", ""},
		{"linux-image-7.3.4+deb13-rt-amd64", "", ""},
		{"linux-image-6.1.0-56-amd64-unsigned", "", ""},
		{"linux-image-7.3.4+deb13-amd64-dbg", "", ""},
		{"linux-binary-unsigned-7.3.4+deb13-amd64", "", ""},
		{"linux-image-amd64", "", ""},
		{"linux-base-amd64", "", ""},
	}
	for _, tt := range tests {
		m := kernelNameRE.FindStringSubmatch(tt.name)
		kind, abi := "", ""
		if m != nil {
			kind, abi = m[1], m[2]
		}
		if kind != tt.kind || abi != tt.abi {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", tt.name, kind, abi, tt.kind, tt.abi)
		}
	}
}

func TestParseMadison(t *testing.T) {
	out := []byte(` linux-image-6.1.0-56-amd64 |  6.1.192-2 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-binary-7.3.4+deb13-amd64 | 7.3.4-1~bpo13+1 | http://mirror.example/debian trixie-backports/main amd64 Packages
     linux | 6.1.192-2 | http://mirror.example/debian bookworm/main Sources
garbage
`)
	got := parseMadison(out)
	want := []madisonLine{
		{"linux-image-6.1.0-56-amd64", "6.1.192-2", "bookworm-security"},
		{"linux-binary-7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", "trixie-backports"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseMadison = %+v, want %+v", got, want)
	}
}

func TestDebMember(t *testing.T) {
	for name, want := range map[string]string{
		"./boot/vmlinuz-6.1.0-56-amd64":                "bzImage",
		"./boot/config-6.1.0-56-amd64":                 "config",
		"./boot/System.map-6.1.0-56-amd64":             "",
		"./usr/lib/modules/7.3.4+deb13-amd64/vmlinuz":  "bzImage",
		"./usr/lib/modules/7.3.4+deb13-amd64/config":   "config",
		"./lib/modules/6.1.0-56-amd64/vmlinuz":         "bzImage",
		"./usr/lib/modules/7.3.4+deb13-amd64/kernel/x": "",
		"./usr/lib/modules/x/kernel/config":            "",
		"./usr/share/doc/linux/config":                 "",
	} {
		if got := debMember(name); got != want {
			t.Errorf("debMember(%q) = %q, want %q", name, got, want)
		}
	}
}

// readCpio parses a newc archive back, for the tests.
func readCpio(t *testing.T, b []byte) map[string][2]any {
	t.Helper()
	entries := map[string][2]any{}
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, rmaj, rmin, namesize := field(1), field(6), field(9), field(10), field(11)
		name := string(b[off+110 : off+110+namesize-1])
		dataOff := align(off + 110 + namesize)
		data := b[dataOff : dataOff+size]
		off = align(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return entries
		}
		entries[name] = [2]any{fmt.Sprintf("%o %d:%d", mode, rmaj, rmin), string(data)}
	}
}

func TestCpioWriter(t *testing.T) {
	var buf bytes.Buffer
	cw := &cpioWriter{w: &buf}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cw.Dir("dev", 0o755))
	must(cw.CharDev("/dev/console", 0o600, 5, 1))
	must(cw.File("init", 0o755, []byte("abcde")))
	must(cw.File("a/bb", 0o644, nil))
	must(cw.Symlink("lnk", "init"))
	must(cw.Close())
	if buf.Len()%4 != 0 {
		t.Errorf("archive length %d is not a multiple of 4", buf.Len())
	}
	got := readCpio(t, buf.Bytes())
	want := map[string][2]any{
		"dev":         {"40755 0:0", ""},
		"dev/console": {"20600 5:1", ""},
		"init":        {"100755 0:0", "abcde"},
		"a/bb":        {"100644 0:0", ""},
		"lnk":         {"120777 0:0", "init"},
	}
	if len(got) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(got), len(want), got)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %v, want %v", k, got[k], w)
		}
	}
	if err := (&cpioWriter{w: io.Discard}).File("", 0, nil); err == nil {
		t.Error("empty name accepted")
	}
}

func TestParseTestOutput(t *testing.T) {
	out := `=== RUN   TestA
    a_test.go:1: hello
--- PASS: TestA (0.00s)
=== RUN   TestB
=== RUN   TestB/sub
    b_test.go:2: broken
=== NAME  TestB
    b_test.go:3: parent says
--- FAIL: TestB (0.00s)
    --- FAIL: TestB/sub (0.00s)
=== RUN   TestC
    c_test.go:4: some log
    c_test.go:5: needs root
--- SKIP: TestC (0.00s)
=== RUN   TestD
--- SKIP: TestD (0.00s)
=== RUN   TestE
panic: test timed out after 5s
FAIL`
	r := parseTestOutput(strings.Split(out, "\n"))
	type c struct {
		name, result string
		unfinished   bool
	}
	var got []c
	for _, tc := range r.Cases {
		got = append(got, c{tc.Name, tc.Result, tc.Unfinished})
	}
	want := []c{
		{"TestA", "PASS", false},
		{"TestB", "FAIL", false},
		{"TestB/sub", "FAIL", false},
		{"TestC", "SKIP", false},
		{"TestD", "SKIP", false},
		{"TestE", "FAIL", true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("cases = %v, want %v", got, want)
	}
	if n := r.count("FAIL"); n != 3 {
		t.Errorf("count(FAIL) = %d, want 3", n)
	}
	if got := r.Cases[3].skipReason(); got != "c_test.go:5: needs root" {
		t.Errorf("TestC skip reason = %q", got)
	}
	if got := r.Cases[4].skipReason(); got != "" {
		t.Errorf("TestD skip reason = %q", got)
	}
	if got := strings.Join(r.Cases[2].Output, "\n"); !strings.Contains(got, "broken") {
		t.Errorf("TestB/sub output = %q", got)
	}
	if got := strings.Join(r.Cases[5].Output, "\n"); !strings.Contains(got, "timed out") {
		t.Errorf("TestE output = %q", got)
	}
	if len(r.Other) != 0 {
		t.Errorf("unattributed lines: %q", r.Other)
	}
}

func TestResultLine(t *testing.T) {
	for _, r := range []guest.Result{
		{Pass: true, Name: "connector", ExitCode: 0, Duration: 1500 * time.Millisecond},
		{Name: "proc", ExitCode: -1, Duration: 20 * time.Second, Reason: "timeout"},
		{Name: "x", ExitCode: 2, Duration: time.Millisecond, Reason: "signal:killed"},
	} {
		line := "[  1.0] " + r.String()
		got, ok := guest.ParseResult(line)
		if !ok || got != r {
			t.Errorf("ParseResult(%q) = %+v, %v; want %+v", line, got, ok, r)
		}
	}
	if _, ok := guest.ParseResult("KMATRIX-RESULT maybe x 0 1s"); ok {
		t.Error("bad verdict accepted")
	}
	if rest, ok := guest.After("Booting from ROM..KMATRIX-BOOTED 6.1.0 uptime=3.0", guest.MarkBooted); !ok || rest != "6.1.0 uptime=3.0" {
		t.Errorf("After = %q, %v", rest, ok)
	}
	if _, ok := guest.After("KMATRIX-BOOTEDX", guest.MarkBooted); ok {
		t.Error("After matched a longer word")
	}
}

// note builds one ELF note.
func note(name string, typ uint32, desc []byte) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(name)+1))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(desc)))
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func TestHasPVHNote(t *testing.T) {
	other := note("GNU", 3, []byte{1, 2, 3, 4, 5})
	pvh := note("Xen", 18, []byte{0, 0, 0, 1})
	if !hasPVHNote(append(other, pvh...)) {
		t.Error("PVH note not found")
	}
	if hasPVHNote(append(other, note("Xen", 17, nil)...)) {
		t.Error("wrong note type accepted")
	}
	if hasPVHNote(pvh[:len(pvh)-2]) {
		t.Error("truncated note accepted")
	}
}

// fakeBzImage builds a bzImage-shaped file around a payload.
func fakeBzImage(payload []byte, junk int) []byte {
	const setupSects = 3
	bz := make([]byte, (setupSects+1)*512+junk)
	bz[0x1f1] = setupSects
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(bz[0x248:], uint32(junk))
	binary.LittleEndian.PutUint32(bz[0x24c:], uint32(len(payload)))
	bz = append(bz, payload...)
	return append(bz, 1, 2, 3, 4) // as if signed
}

func TestBzPayload(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("not an ELF"))
	zw.Close()
	bz := fakeBzImage(z.Bytes(), 100)
	p, err := bzPayload(bz)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, z.Bytes()) || payloadFormat(p) != "gzip" {
		t.Fatalf("payload %x, format %q", p[:8], payloadFormat(p))
	}
	out, err := decompress(context.Background(), "gzip", p, &toolbox{})
	if err != nil || string(out) != "not an ELF" {
		t.Fatalf("decompress = %q, %v", out, err)
	}
	if _, _, err := extractVmlinux(context.Background(), bz, &toolbox{}); err == nil {
		t.Error("extractVmlinux accepted a payload that is not an ELF")
	}
	if _, err := bzPayload(bz[:0x300]); err == nil {
		t.Error("truncated bzImage accepted")
	}
	if _, err := bzPayload(make([]byte, 4096)); err == nil {
		t.Error("file without boot header accepted")
	}
}

func TestNameBinaries(t *testing.T) {
	pkgs := []testPkg{
		{ImportPath: "github.com/cnlink/connector"},
		{ImportPath: "github.com/cnlink/connector/proc"},
		{ImportPath: "github.com/cnlink/connector/examples/proc"},
		{ImportPath: "github.com/cnlink/connector/internal/kmatrix/testdata/smoke"},
	}
	nameBinaries(pkgs)
	var got []string
	for _, p := range pkgs {
		got = append(got, p.name)
	}
	want := []string{"connector", "connector-proc", "examples-proc", "smoke"}
	if !slices.Equal(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	pkgs = pkgs[:2]
	nameBinaries(pkgs)
	if pkgs[0].name != "connector" || pkgs[1].name != "proc" {
		t.Errorf("names = %q, %q", pkgs[0].name, pkgs[1].name)
	}
}

func TestHasFlag(t *testing.T) {
	args := []string{"-test.v", "--test.timeout=3s"}
	if !hasFlag(args, "test.timeout") || !hasFlag(args, "test.v") || hasFlag(args, "test.run") {
		t.Error("hasFlag wrong")
	}
}

func TestHostMirrors(t *testing.T) {
	etc := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list.d/other.list", "deb [arch=amd64 signed-by=/x.gpg] https://vendor.example/apt nodistro main\n")
	write("sources.list.d/debian.sources", `Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm-security

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
`)
	m, s, err := hostMirrors(etc)
	if err != nil || m != "http://mirror.example/debian" || s != "http://security.example/debian-security" {
		t.Errorf("hostMirrors = %q, %q, %v", m, s, err)
	}

	etc = t.TempDir()
	write("sources.list", "# deb http://old.example/debian buster main\ndeb [ arch=amd64 ] http://one.example/debian/ trixie main\n")
	m, s, err = hostMirrors(etc)
	if err != nil || m != "http://one.example/debian" || s != "http://one.example/debian-security" {
		t.Errorf("hostMirrors (one-line) = %q, %q, %v", m, s, err)
	}

	if _, _, err := hostMirrors(t.TempDir()); err == nil {
		t.Error("no sources: no error")
	}
}

func TestKernelTrouble(t *testing.T) {
	for line, want := range map[string]bool{
		"[    5.355998] reboot: Power down":                                   false,
		"[    2.100000] WARNING: CPU: 0 PID: 1 at kernel/foo.c:1 bar+0x1/0x2": true,
		"[ 1234.5] BUG: kernel NULL pointer dereference":                      true,
		"    foo_test.go:12: WARNING: not a kernel message":                   false,
	} {
		if got := kernelTrouble.MatchString(line); got != want {
			t.Errorf("kernelTrouble.MatchString(%q) = %v, want %v", line, got, want)
		}
	}
	if got := ansiEscape.ReplaceAllString("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS", ""); got != "SeaBIOS" {
		t.Errorf("escape stripping left %q", got)
	}
}
