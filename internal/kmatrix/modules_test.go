package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseModuleLines(t *testing.T) {
	got, err := parseModuleLines("# comment\n\nwire\ni2c-stub chip_addr=0x18  # trailing\ncopy uvesafb\n  dm_mod \n")
	if err != nil {
		t.Fatal(err)
	}
	want := []moduleLine{
		{name: "wire", load: true},
		{name: "i2c-stub", params: "chip_addr=0x18", load: true},
		{name: "uvesafb"},
		{name: "dm_mod", load: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{
		"copy",                 // no name
		"copy uvesafb v86d=/x", // copy takes no parameters
		"wire nonsense",        // parameter without '='
		"wire =1",              // empty parameter name
		"../etc/passwd",        // not a module name
		"a/b",
	} {
		if _, err := parseModuleLines(bad); err == nil {
			t.Errorf("parseModuleLines(%q) succeeded, want an error", bad)
		}
	}
}

func TestModuleFileName(t *testing.T) {
	for in, want := range map[string]string{
		"dm-mod.ko":              "dm_mod",
		"dm-log-userspace.ko.xz": "dm_log_userspace",
		"wire.ko.zst":            "wire",
		"i2c-dev.ko.gz":          "i2c_dev",
		"modules.dep":            "",
		".ko":                    "",
		"vmlinuz":                "",
	} {
		got, ok := moduleFileName(in)
		if got != want || ok != (want != "") {
			t.Errorf("moduleFileName(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestModulesPackages(t *testing.T) {
	old := kernelPkg{ABI: "6.1.0-57", Packages: []string{"linux-image-6.1.0-57-amd64"}}
	if got := modulesPackages(old).Packages; !reflect.DeepEqual(got, old.Packages) {
		t.Errorf("up to 6.18 the modules are in the image package: %v", got)
	}
	k := kernelPkg{ABI: "7.3.4+deb13", Packages: []string{"linux-binary-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64"}}
	want := []string{"linux-modules-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64"}
	if got := modulesPackages(k).Packages; !reflect.DeepEqual(got, want) {
		t.Errorf("from 6.19 on: %v, want %v", got, want)
	}
}

func TestResolvePattern(t *testing.T) {
	root := t.TempDir()
	nested := filepath.Join(root, "internal", "kmatrix")
	for _, d := range []string{filepath.Join(root, "proc"), filepath.Join(nested, "testdata", "smoke")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/root\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nested, "go.mod"), []byte("module example.com/root/internal/kmatrix\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ pat, dir, rel string }{
		{".", root, "."},
		{"./...", root, "./..."},
		{"./proc", root, "./proc"},
		{"./proc/...", root, "./proc/..."},
		{"./internal/kmatrix/testdata/smoke", nested, "./testdata/smoke"},
		{"./internal/kmatrix/...", nested, "./..."},
		{"example.com/root/proc", root, "example.com/root/proc"},
	} {
		dir, rel, err := resolvePattern(root, tc.pat)
		if err != nil || dir != tc.dir || rel != tc.rel {
			t.Errorf("resolvePattern(%q) = %q, %q, %v; want %q, %q", tc.pat, dir, rel, err, tc.dir, tc.rel)
		}
	}
}
