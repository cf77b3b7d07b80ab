package main

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// kernelEntry is a kernel in the cache: <cache>/kernels/<abi>_<version>/
// holds bzImage, config, info.json and, if it could be extracted, vmlinux.
type kernelEntry struct {
	Pkg kernelPkg `json:"package"`
	// Compression of the bzImage's payload (gzip, xz, zstd, ...).
	Compression string `json:"compression,omitempty"`
	// VmlinuxError says why there is no bootable vmlinux; empty if there
	// is one, or if extraction has not been tried yet.
	VmlinuxError string `json:"vmlinux_error,omitempty"`
	Tried        bool   `json:"vmlinux_tried"`

	dir string
}

func (e *kernelEntry) path(name string) string { return filepath.Join(e.dir, name) }

// bootImage returns the file to pass to qemu's -kernel.
func (e *kernelEntry) bootImage(forceBzImage bool) string {
	if !forceBzImage && e.Tried && e.VmlinuxError == "" {
		return e.path("vmlinux")
	}
	return e.path("bzImage")
}

func (e *kernelEntry) save() error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	tmp := e.path("info.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, e.path("info.json"))
}

func loadEntry(dir string) (*kernelEntry, error) {
	b, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		return nil, err
	}
	e := &kernelEntry{dir: dir}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(e.Pkg.Packages) == 0 {
		return nil, fmt.Errorf("%s: no package recorded", dir)
	}
	return e, nil
}

// cachedKernel returns the newest cached kernel matching spec.
func cachedKernel(cacheDir, spec string) (*kernelEntry, error) {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, "kernels", "*"))
	var best *kernelEntry
	for _, d := range dirs {
		e, err := loadEntry(d)
		if err != nil || !versionMatches(e.Pkg.Version, spec) {
			continue
		}
		if best == nil || compareDebVersions(e.Pkg.Version, best.Pkg.Version) > 0 {
			best = e
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no cached kernel matches %s", spec)
	}
	best.Pkg.Spec = spec
	return best, nil
}

// fetchKernel makes sure the kernel k is in the cache, downloading and
// extracting it if needed.
func fetchKernel(ctx context.Context, repo *aptRepo, cacheDir string, k kernelPkg, logf func(string, ...any)) (*kernelEntry, error) {
	final := filepath.Join(cacheDir, "kernels", k.cacheKey())
	if e, err := loadEntry(final); err == nil {
		e.Pkg.Spec = k.Spec
		return e, nil
	}
	tmpRoot := filepath.Join(cacheDir, "tmp")
	if err := os.MkdirAll(tmpRoot, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(tmpRoot, k.cacheKey()+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dl := filepath.Join(tmp, "debs")
	entryDir := filepath.Join(tmp, "entry")
	for _, d := range []string{dl, entryDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	debs, err := repo.download(ctx, k, dl)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, d := range debs {
		if st, err := os.Stat(d); err == nil {
			size += st.Size()
		}
	}
	logf("downloaded %s %s (%d MB) in %s", strings.Join(k.Packages, " "), k.Version, size>>20, time.Since(start).Round(100*time.Millisecond))
	start = time.Now()
	for _, d := range debs {
		if err := extractDeb(ctx, d, entryDir); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"bzImage", "config"} {
		if _, err := os.Stat(filepath.Join(entryDir, f)); err != nil {
			return nil, fmt.Errorf("%s %s: no %s found in %s", k.Name(), k.Version, f, strings.Join(k.Packages, ", "))
		}
	}
	e := &kernelEntry{Pkg: k, dir: entryDir}
	if err := e.save(); err != nil {
		return nil, err
	}
	logf("extracted kernel and config in %s", time.Since(start).Round(100*time.Millisecond))
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(entryDir, final); err != nil {
		// Another runner may have won the race.
		if e2, err2 := loadEntry(final); err2 == nil {
			e2.Pkg.Spec = k.Spec
			return e2, nil
		}
		return nil, err
	}
	e.dir = final
	return e, nil
}

// debMember classifies a path inside a kernel package: "bzImage" for the
// kernel image, "config" for its configuration, "" for anything else.
// Up to 6.18 they are /boot/vmlinuz-ABI and /boot/config-ABI; from 6.19 on
// /usr/lib/modules/ABI/vmlinuz and .../config.
func debMember(name string) string {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	dir, base := path.Split(name)
	if dir == "boot/" {
		switch {
		case strings.HasPrefix(base, "vmlinuz-"):
			return "bzImage"
		case strings.HasPrefix(base, "config-"):
			return "config"
		}
		return ""
	}
	abi, ok := strings.CutPrefix(strings.TrimPrefix(dir, "usr/"), "lib/modules/")
	abi = strings.TrimSuffix(abi, "/")
	if !ok || abi == "" || strings.Contains(abi, "/") {
		return ""
	}
	switch base {
	case "vmlinuz":
		return "bzImage"
	case "config":
		return "config"
	}
	return ""
}

// extractDeb copies the kernel image and config out of a .deb into dir,
// using dpkg-deb --fsys-tarfile. It stops reading once both were found.
func extractDeb(ctx context.Context, deb, dir string) error {
	found := map[string]bool{}
	return walkDeb(ctx, deb, func(h *tar.Header, r io.Reader) (bool, error) {
		kind := debMember(h.Name)
		if kind == "" {
			return false, nil
		}
		f, err := os.Create(filepath.Join(dir, kind))
		if err != nil {
			return false, err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return false, err
		}
		found[kind] = true
		// The rest of the archive (modules) is not needed.
		return found["bzImage"] && found["config"], nil
	})
}

// walkDeb reads the files of a .deb's data archive with dpkg-deb
// --fsys-tarfile and calls visit with each regular file, in archive order,
// until visit reports done (the rest is not read, and dpkg-deb is stopped)
// or fails. Errors name the package and carry dpkg-deb's message.
func walkDeb(ctx context.Context, deb string, visit func(h *tar.Header, r io.Reader) (done bool, err error)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := false
	readErr := func() error {
		tr := tar.NewReader(out)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			if done, err = visit(h, tr); err != nil || done {
				return err
			}
		}
	}()
	if done || readErr != nil {
		cancel()
	}
	waitErr := cmd.Wait()
	if readErr != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v %s", filepath.Base(deb), readErr, stderr.String())
	}
	if waitErr != nil && !done {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %v %s", filepath.Base(deb), waitErr, stderr.String())
	}
	return nil
}

// ensureVmlinux extracts vmlinux from the entry's bzImage once; a failure is
// recorded and the bzImage is booted instead.
func ensureVmlinux(ctx context.Context, e *kernelEntry, tools *toolbox, logf func(string, ...any)) {
	if e.Tried {
		return
	}
	start := time.Now()
	bz, err := os.ReadFile(e.path("bzImage"))
	if err == nil {
		var vmlinux []byte
		vmlinux, e.Compression, err = extractVmlinux(ctx, bz, tools)
		if err == nil {
			err = writeFileAtomic(e.path("vmlinux"), vmlinux)
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return // try again next time
		}
		e.VmlinuxError = err.Error()
		logf("no vmlinux (%v): booting the bzImage", err)
	} else {
		logf("extracted vmlinux (%s payload) in %s", e.Compression, time.Since(start).Round(100*time.Millisecond))
	}
	e.Tried = true
	if err := e.save(); err != nil {
		logf("saving %s: %v", e.path("info.json"), err)
	}
}

func writeFileAtomic(name string, data []byte) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// compression formats of the kernel payload, with their magic numbers.
var payloadFormats = []struct {
	name  string
	magic []byte
}{
	{"gzip", []byte{0x1f, 0x8b, 0x08}},
	{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}},
	{"bzip2", []byte{'B', 'Z', 'h'}},
	{"lzma", []byte{0x5d, 0x00, 0x00}},
}

func payloadFormat(b []byte) string {
	for _, f := range payloadFormats {
		if bytes.HasPrefix(b, f.magic) {
			return f.name
		}
	}
	return ""
}

// bzPayload returns the compressed payload of a bzImage as located by its
// setup header (boot protocol 2.08 and later).
func bzPayload(bz []byte) ([]byte, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, errors.New("no Linux boot header")
	}
	if v := binary.LittleEndian.Uint16(bz[0x206:]); v < 0x208 {
		return nil, fmt.Errorf("boot protocol %#x has no payload fields", v)
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off < 0 || n <= 0 || off+n > len(bz) {
		return nil, errors.New("payload outside the file")
	}
	return bz[off : off+n], nil
}

// extractVmlinux finds the compressed kernel inside a bzImage, decompresses
// it and checks that the result is an x86-64 ELF with a PVH entry note. It
// reads the payload's place from the boot header and, failing that, scans
// for compression magic numbers.
func extractVmlinux(ctx context.Context, bz []byte, tools *toolbox) ([]byte, string, error) {
	var firstErr error
	try := func(format string, data []byte) ([]byte, bool) {
		out, err := decompress(ctx, format, data, tools)
		if err == nil {
			err = checkVmlinux(out)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("%s payload: %w", format, err)
			}
			return nil, false
		}
		return out, true
	}
	if p, err := bzPayload(bz); err == nil {
		if f := payloadFormat(p); f != "" {
			if out, ok := try(f, p); ok {
				return out, f, nil
			}
		}
	}
	// Scan, as the kernel tree's extract-vmlinux does.
	for _, f := range payloadFormats {
		rest, base, tries := bz, 0, 0
		for tries < 8 {
			i := bytes.Index(rest, f.magic)
			if i < 0 {
				break
			}
			tries++
			if out, ok := try(f.name, bz[base+i:]); ok {
				return out, f.name, nil
			}
			base += i + 1
			rest = bz[base:]
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no compressed payload found")
	}
	return nil, "", firstErr
}

// maxVmlinux bounds the decompressed size.
const maxVmlinux = 1 << 30

// decompress decompresses data in the given format. Trailing bytes after the
// compressed stream (the kernel build appends the uncompressed size) may make
// the external tools complain after they wrote everything; such errors are
// ignored if some output came out, and the caller checks that output.
func decompress(ctx context.Context, format string, data []byte, tools *toolbox) ([]byte, error) {
	switch format {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		zr.Multistream(false)
		out, err := io.ReadAll(io.LimitReader(zr, maxVmlinux))
		if len(out) == 0 {
			return nil, err
		}
		return out, nil
	case "bzip2":
		out, err := io.ReadAll(io.LimitReader(bzip2.NewReader(bytes.NewReader(data)), maxVmlinux))
		if len(out) == 0 {
			return nil, err
		}
		return out, nil
	}
	var name string
	var args []string
	switch format {
	case "xz":
		name, args = "xz", []string{"-dc", "--single-stream"}
	case "lzma":
		name, args = "xz", []string{"-dc", "--format=lzma"}
	case "zstd":
		name, args = "zstd", []string{"-dcq"}
	case "lz4":
		name, args = "lz4", []string{"-dcq"}
	default:
		return nil, fmt.Errorf("unsupported compression %s", format)
	}
	if err := tools.need(ctx, name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &out, max: maxVmlinux}
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if out.Len() == 0 {
		if err == nil {
			err = errors.New("no output")
		}
		return nil, fmt.Errorf("%s: %v %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.buf.Len()+len(p) > l.max {
		return 0, errors.New("output too large")
	}
	return l.buf.Write(p)
}

// checkVmlinux checks that b is a complete x86-64 ELF executable that qemu
// can boot through PVH (it carries the XEN_ELFNOTE_PHYS32_ENTRY note).
func checkVmlinux(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("not an x86-64 ELF (%v %v)", f.Class, f.Machine)
	}
	pvh := false
	for _, p := range f.Progs {
		if p.Off+p.Filesz > uint64(len(b)) {
			return errors.New("truncated ELF")
		}
		if p.Type == elf.PT_NOTE && hasPVHNote(b[p.Off:p.Off+p.Filesz]) {
			pvh = true
		}
	}
	if !pvh {
		return errors.New("no PVH entry note (CONFIG_PVH off?)")
	}
	return nil
}

// hasPVHNote reports whether an ELF note segment holds a "Xen" note of type
// 18, XEN_ELFNOTE_PHYS32_ENTRY.
func hasPVHNote(notes []byte) bool {
	for len(notes) >= 12 {
		namesz := binary.LittleEndian.Uint32(notes[0:])
		descsz := binary.LittleEndian.Uint32(notes[4:])
		typ := binary.LittleEndian.Uint32(notes[8:])
		nameEnd := 12 + (uint64(namesz)+3)&^3
		end := nameEnd + (uint64(descsz)+3)&^3
		if end > uint64(len(notes)) {
			return false
		}
		if typ == 18 && namesz == 4 && string(notes[12:16]) == "Xen\x00" {
			return true
		}
		notes = notes[end:]
	}
	return false
}
