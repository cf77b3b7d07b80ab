package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// The Debian keyring that signs both bookworm and trixie (package
// debian-archive-keyring, priority important).
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// aptRepo is a private apt configuration under the cache directory: its own
// sources list, state and cache directories, and none of the host's
// apt.conf.d, sources.list.d or preferences. Nothing under /etc/apt or
// /var/lib/apt is read for package lists or written.
type aptRepo struct {
	dir            string // <cache>/apt
	mirror         string // for bookworm, trixie, trixie-backports
	securityMirror string // for bookworm-security, trixie-security
	refresh        bool   // run apt-get update even if the lists are fresh
	maxAge         time.Duration
	logf           func(format string, args ...any)

	mu      sync.Mutex // serialises every apt-get and apt-cache call
	updated bool
}

func (r *aptRepo) confPath() string { return filepath.Join(r.dir, "apt.conf") }

// sources returns the contents of the private sources list.
func (r *aptRepo) sources() string {
	opts := "[arch=amd64"
	if _, err := os.Stat(debianKeyring); err == nil {
		opts += " signed-by=" + debianKeyring
	}
	opts += "]"
	var b strings.Builder
	for _, s := range []struct{ uri, suite string }{
		{r.mirror, "bookworm"},
		{r.securityMirror, "bookworm-security"},
		{r.mirror, "trixie"},
		{r.securityMirror, "trixie-security"},
		{r.mirror, "trixie-backports"},
	} {
		fmt.Fprintf(&b, "deb %s %s %s main\n", opts, s.uri, s.suite)
	}
	return b.String()
}

// setup writes the private configuration. It reports whether the sources
// differ from those the current lists were fetched with.
func (r *aptRepo) setup() (changed bool, err error) {
	empty := filepath.Join(r.dir, "empty.d")
	for _, d := range []string{
		empty,
		filepath.Join(r.dir, "state", "lists", "partial"),
		filepath.Join(r.dir, "cache", "archives", "partial"),
	} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, err
		}
	}
	status := filepath.Join(r.dir, "state", "status")
	if _, err := os.Stat(status); err != nil {
		if err := os.WriteFile(status, nil, 0o644); err != nil {
			return false, err
		}
	}
	srcPath := filepath.Join(r.dir, "sources.list")
	src := r.sources()
	old, _ := os.ReadFile(srcPath)
	changed = string(old) != src
	if changed {
		if err := os.WriteFile(srcPath, []byte(src), 0o644); err != nil {
			return false, err
		}
	}
	// The -o options of apt-get are applied only after apt has read the
	// host's apt.conf.d, so the redirections live in a file named by
	// APT_CONFIG, which apt reads first.
	conf := fmt.Sprintf(`// Written by the connector kernel matrix runner; private to it.
Dir::Etc::main "/dev/null";
Dir::Etc::parts %[1]q;
Dir::Etc::sourcelist %[2]q;
Dir::Etc::sourceparts %[1]q;
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts %[1]q;
Dir::State %[3]q;
Dir::State::status %[4]q;
Dir::Cache %[5]q;
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
`, empty, srcPath, filepath.Join(r.dir, "state"), status, filepath.Join(r.dir, "cache"))
	return changed, os.WriteFile(r.confPath(), []byte(conf), 0o644)
}

// cmd returns an apt command that uses only the private configuration.
func (r *aptRepo) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		// As root, apt downloads as the _apt user, who cannot reach a
		// cache under root's home directory; apt then falls back to
		// root with a warning. Say so up front.
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), "APT_CONFIG="+r.confPath(), "LC_ALL=C")
	c.WaitDelay = 5 * time.Second
	return c
}

// ensureLists runs apt-get update on the private configuration unless the
// lists are younger than maxAge and were fetched for the same sources.
func (r *aptRepo) ensureLists(ctx context.Context) error {
	if r.updated {
		return nil
	}
	changed, err := r.setup()
	if err != nil {
		return fmt.Errorf("private apt configuration: %w", err)
	}
	stamp := filepath.Join(r.dir, "updated")
	if st, err := os.Stat(stamp); err == nil && !changed && !r.refresh && time.Since(st.ModTime()) < r.maxAge {
		r.updated = true
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out, err := r.cmd(ctx, "apt-get", "-q", "update").CombinedOutput()
	if err != nil {
		// Some suites may still have usable lists; resolving says
		// whether the kernel asked for is among them.
		r.logf("apt-get update (private configuration) failed: %v\n%s", err, grepLines(out, "W: ", "E: ", "Err:"))
		r.updated = true
		return nil
	}
	if bytes.Contains(out, []byte("\nW: ")) || bytes.Contains(out, []byte("\nE: ")) {
		r.logf("apt-get update warned:\n%s", grepLines(out, "W: ", "E: "))
	}
	r.logf("apt-get update (private lists) took %s", time.Since(start).Round(100*time.Millisecond))
	r.updated = true
	return os.WriteFile(stamp, nil, 0o644)
}

// grepLines returns the lines of out that start with one of the prefixes.
func grepLines(out []byte, prefixes ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(string(out), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// kernelPkg is a resolved kernel: the packages that carry its image and
// config, all of one version.
type kernelPkg struct {
	Spec     string   `json:"spec"`     // what was asked for, e.g. 6.12
	ABI      string   `json:"abi"`      // e.g. 6.1.0-56 or 6.12.117+deb13
	Version  string   `json:"version"`  // Debian package version
	Suite    string   `json:"suite"`    // archive suite it came from
	Packages []string `json:"packages"` // binary packages to download
}

// Name is the package name shown in the summary.
func (k kernelPkg) Name() string { return k.Packages[0] }

// cacheKey names the cache directory of the kernel.
func (k kernelPkg) cacheKey() string {
	return sanitizeName(k.ABI + "_" + k.Version)
}

func sanitizeName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '+', r == '_':
			return r
		}
		return '_'
	}, s)
}

// kernelNameRE matches the amd64 flavour's image packages: linux-image-* up
// to 6.18, linux-binary-* (kernel) plus linux-base-* (config) from 6.19 on,
// where linux-image-* became an empty meta package. Other flavours (cloud,
// rt), -unsigned and -dbg packages do not match.
var kernelNameRE = regexp.MustCompile(`^linux-(image|binary|base)-([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:-[0-9]+)?(?:\+[0-9a-z.]+)?)-amd64$`)

// versionMatches reports whether the Debian version v belongs to spec: spec
// is v itself or a prefix of it ending at a component boundary (6.1 matches
// 6.1.192-1 but not 6.12.117-1).
func versionMatches(v, spec string) bool {
	if v == spec {
		return true
	}
	if !strings.HasPrefix(v, spec) {
		return false
	}
	switch v[len(spec)] {
	case '.', '-', '~', '+':
		return true
	}
	return false
}

// madisonLine is one line of apt-cache madison output.
type madisonLine struct{ name, version, suite string }

func parseMadison(out []byte) []madisonLine {
	var res []madisonLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 3 {
			continue
		}
		src := strings.Fields(f[2])
		if len(src) < 4 || src[len(src)-1] != "Packages" {
			continue
		}
		suite, _, _ := strings.Cut(src[1], "/")
		res = append(res, madisonLine{strings.TrimSpace(f[0]), strings.TrimSpace(f[1]), suite})
	}
	return res
}

// resolve finds the newest kernel whose package version matches spec.
func (r *aptRepo) resolve(ctx context.Context, spec string) (kernelPkg, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.ensureLists(ctx); err != nil {
		return kernelPkg{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := r.cmd(ctx, "apt-cache", "pkgnames", "linux-").Output()
	if err != nil {
		return kernelPkg{}, fmt.Errorf("apt-cache pkgnames: %w", err)
	}
	// The ABI starts with the first two components of the version.
	mm := majorMinor(spec)
	var names []string
	for _, n := range strings.Fields(string(out)) {
		if m := kernelNameRE.FindStringSubmatch(n); m != nil && versionMatches(m[2], mm) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return kernelPkg{}, fmt.Errorf("no linux-image/linux-binary package for %s in the private apt lists", spec)
	}
	out, err = r.cmd(ctx, "apt-cache", append([]string{"madison"}, names...)...).Output()
	if err != nil {
		return kernelPkg{}, fmt.Errorf("apt-cache madison: %w", err)
	}
	type key struct{ kind, abi, version string }
	have := map[key]string{} // -> suite
	var best *kernelPkg
	bestKind := ""
	lines := parseMadison(out)
	for _, l := range lines {
		m := kernelNameRE.FindStringSubmatch(l.name)
		if m == nil {
			continue
		}
		have[key{m[1], m[2], l.version}] = l.suite
	}
	for _, l := range lines {
		m := kernelNameRE.FindStringSubmatch(l.name)
		if m == nil || m[1] == "base" || !versionMatches(l.version, spec) {
			continue
		}
		kind, abi := m[1], m[2]
		if kind == "binary" {
			if _, ok := have[key{"base", abi, l.version}]; !ok {
				continue
			}
		}
		c := 1
		if best != nil {
			c = compareDebVersions(l.version, best.Version)
		}
		// At equal versions linux-binary wins: from 6.19 on the
		// linux-image package of the same version is empty.
		if c > 0 || (c == 0 && kind == "binary" && bestKind != "binary") {
			k := kernelPkg{Spec: spec, ABI: abi, Version: l.version, Suite: l.suite}
			if kind == "binary" {
				k.Packages = []string{"linux-binary-" + abi + "-amd64", "linux-base-" + abi + "-amd64"}
			} else {
				k.Packages = []string{l.name}
			}
			best, bestKind = &k, kind
		}
	}
	if best == nil {
		return kernelPkg{}, fmt.Errorf("no kernel package version matches %s", spec)
	}
	return *best, nil
}

// download fetches the kernel's packages into dir with apt-get download.
func (r *aptRepo) download(ctx context.Context, k kernelPkg, dir string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	args := []string{"-q", "download"}
	for _, p := range k.Packages {
		args = append(args, p+"="+k.Version)
	}
	c := r.cmd(ctx, "apt-get", args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download: %v\n%s", err, out)
	}
	debs, err := filepath.Glob(filepath.Join(dir, "*.deb"))
	if err != nil {
		return nil, err
	}
	if len(debs) != len(k.Packages) {
		return nil, fmt.Errorf("apt-get download left %d .deb files, want %d", len(debs), len(k.Packages))
	}
	return debs, nil
}

// toolbox finds host commands and installs the Debian packages that provide
// missing ones, if allowed.
type toolbox struct {
	install bool
	logf    func(format string, args ...any)

	mu     sync.Mutex
	failed map[string]error
}

// toolPackages maps the commands the runner uses to their Debian packages.
var toolPackages = map[string]string{
	"qemu-system-x86_64": "qemu-system-x86",
	"xz":                 "xz-utils",
	"zstd":               "zstd",
	"lz4":                "lz4",
	"dpkg-deb":           "dpkg",
	"apt-get":            "apt",
	"apt-cache":          "apt",
}

// need makes sure that each command is on PATH, installing packages with
// apt-get (the host's configuration) if allowed.
func (t *toolbox) need(ctx context.Context, cmds ...string) error {
	if allOnPath(cmds) {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var missing, pkgs []string
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
			p := toolPackages[c]
			if p == "" {
				return fmt.Errorf("command %s not found", c)
			}
			pkgs = append(pkgs, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	key := strings.Join(pkgs, " ")
	if err := t.failed[key]; err != nil {
		return err
	}
	if !t.install {
		return fmt.Errorf("missing %s: install Debian packages %s, or run with -install", strings.Join(missing, ", "), key)
	}
	start := time.Now()
	t.logf("installing %s (for %s)", key, strings.Join(missing, ", "))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	run := func(args ...string) error {
		c := exec.CommandContext(ctx, "apt-get", args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
		c.WaitDelay = 5 * time.Second
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	// Wait for another apt or dpkg run to finish rather than fail.
	install := append([]string{"-q", "-y", "-o", "DPkg::Lock::Timeout=300", "--no-install-recommends", "install"}, pkgs...)
	err := run(install...)
	if err != nil {
		// The host's package lists may be stale or missing.
		if err = run("-q", "update"); err == nil {
			err = run(install...)
		}
	}
	if err == nil {
		for _, c := range missing {
			if _, lerr := exec.LookPath(c); lerr != nil {
				err = fmt.Errorf("installed %s but %s is still not on PATH", key, c)
			}
		}
	}
	if err != nil {
		if t.failed == nil {
			t.failed = map[string]error{}
		}
		t.failed[key] = err
		return err
	}
	t.logf("installed %s in %s", key, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func allOnPath(cmds []string) bool {
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			return false
		}
	}
	return true
}

// debianSuites are the suite names (before any -security, -updates or
// -backports suffix) that mark an apt source as the Debian archive.
var debianSuites = map[string]bool{
	"buster": true, "bullseye": true, "bookworm": true, "trixie": true, "forky": true, "duke": true,
	"sid": true, "oldoldstable": true, "oldstable": true, "stable": true, "testing": true, "unstable": true,
}

// aptSource is one (URI, suite) pair of an enabled "deb" source.
type aptSource struct{ uri, suite string }

// hostSources reads the "deb" sources of the host's apt configuration under
// etc (normally /etc/apt): sources.list and sources.list.d/*.list in the
// one-line format, sources.list.d/*.sources in the deb822 format.
func hostSources(etc string) []aptSource {
	var res []aptSource
	oneLine := []string{filepath.Join(etc, "sources.list")}
	more, _ := filepath.Glob(filepath.Join(etc, "sources.list.d", "*.list"))
	oneLine = append(oneLine, more...)
	for _, f := range oneLine {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			line, _, _ = strings.Cut(line, "#")
			f := strings.Fields(line)
			if len(f) < 3 || f[0] != "deb" {
				continue
			}
			f = f[1:]
			if strings.HasPrefix(f[0], "[") {
				// Options: up to the field that ends with ']'.
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				if len(f) > 0 {
					f = f[1:]
				}
			}
			if len(f) >= 2 {
				res = append(res, aptSource{f[0], f[1]})
			}
		}
	}
	deb822, _ := filepath.Glob(filepath.Join(etc, "sources.list.d", "*.sources"))
	for _, f := range deb822 {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, stanza := range strings.Split(strings.ReplaceAll(string(b), "\r", ""), "\n\n") {
			fields := map[string]string{}
			key := ""
			for _, line := range strings.Split(stanza, "\n") {
				if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
					continue
				}
				if (line[0] == ' ' || line[0] == '\t') && key != "" {
					fields[key] += " " + strings.TrimSpace(line)
					continue
				}
				k, v, ok := strings.Cut(line, ":")
				if !ok {
					continue
				}
				key = strings.ToLower(strings.TrimSpace(k))
				fields[key] = strings.TrimSpace(v)
			}
			if !slices.Contains(strings.Fields(fields["types"]), "deb") || strings.EqualFold(fields["enabled"], "no") {
				continue
			}
			for _, u := range strings.Fields(fields["uris"]) {
				for _, suite := range strings.Fields(fields["suites"]) {
					res = append(res, aptSource{u, suite})
				}
			}
		}
	}
	return res
}

// hostMirrors returns the Debian archive and security archive URIs the
// host's apt uses. If only the archive is found and its path ends in
// /debian, the security archive is assumed beside it (/debian-security).
func hostMirrors(etc string) (mirror, security string, err error) {
	for _, s := range hostSources(etc) {
		base, suffix, _ := strings.Cut(s.suite, "-")
		if !debianSuites[base] {
			continue
		}
		uri := strings.TrimRight(s.uri, "/")
		switch suffix {
		case "security":
			if security == "" {
				security = uri
			}
		case "":
			if mirror == "" {
				mirror = uri
			}
		}
	}
	if mirror == "" {
		return "", "", fmt.Errorf("no Debian archive among the apt sources in %s; give -mirror and -security-mirror", etc)
	}
	if security == "" {
		if !strings.HasSuffix(mirror, "/debian") {
			return "", "", fmt.Errorf("no Debian security archive among the apt sources in %s; give -security-mirror", etc)
		}
		security = mirror + "-security"
	}
	return mirror, security, nil
}

// majorMinor returns the leading "X.Y" of a version (or "X" if that is all
// there is).
func majorMinor(v string) string {
	dots, i := 0, 0
	for ; i < len(v); i++ {
		c := v[i]
		if c == '.' {
			dots++
			if dots == 2 {
				break
			}
			continue
		}
		if c < '0' || c > '9' {
			break
		}
	}
	return strings.TrimSuffix(v[:i], ".")
}
