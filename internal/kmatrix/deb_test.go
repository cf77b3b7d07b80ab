package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// extractDeb and scanModules on a package built with dpkg-deb: the image
// and config are copied out, the wanted modules and modules.builtin read.
func TestWalkDeb(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb missing: ", err)
	}
	root := filepath.Join(t.TempDir(), "pkg")
	files := map[string]string{
		"DEBIAN/control":                                          "Package: linux-image-test\nVersion: 1\nArchitecture: amd64\nMaintainer: test <test@example.org>\nDescription: test\n",
		"boot/vmlinuz-6.1.0-9-amd64":                              "BZ",
		"boot/config-6.1.0-9-amd64":                               "CONFIG_W1=m\n",
		"usr/lib/modules/6.1.0-9-amd64/kernel/drivers/w1/wire.ko": "KO",
		"usr/lib/modules/6.1.0-9-amd64/kernel/fs/other.ko":        "OTHER",
		"usr/lib/modules/6.1.0-9-amd64/modules.builtin":           "kernel/drivers/connector/cn.ko\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb := filepath.Join(t.TempDir(), "test.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "-Znone", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}

	dir := t.TempDir()
	if err := extractDeb(context.Background(), deb, dir); err != nil {
		t.Fatal(err)
	}
	for kind, want := range map[string]string{"bzImage": "BZ", "config": "CONFIG_W1=m\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, kind)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", kind, b, err, want)
		}
	}

	got, bases, builtin := map[string][]byte{}, map[string]string{}, map[string]bool{}
	var release string
	if err := scanModules(context.Background(), deb, map[string]bool{"wire": true}, got, bases, builtin, &release); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string][]byte{"wire": []byte("KO")}) || bases["wire"] != "wire.ko" || release != "6.1.0-9-amd64" || !builtin["cn"] {
		t.Errorf("modules %q, bases %v, release %q, builtin %v", got, bases, release, builtin)
	}

	if err := extractDeb(context.Background(), filepath.Join(dir, "missing.deb"), dir); err == nil {
		t.Error("extractDeb of a missing package: no error")
	}
}
