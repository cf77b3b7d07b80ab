//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// The seeds under testdata/fuzz/<FuzzName>/ were captured from /proc and
// /etc/passwd on a Linux 6.18 machine (cgroup v1 and v2 mixed).

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t1539\nNgid:\t0\nPid:\t1539\nPPid:\t1437\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"))
	f.Add([]byte("Name:\ta\\\\b\\nc\nPPid:\t-5\nUid:\t4294967295\t1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p procInfo
		parseStatus(b, &p)
		if p.uidKnown && !bytes.Contains(b, []byte("Uid:")) {
			t.Errorf("uid known without a Uid line: %+v", p)
		}
		if p.comm != "" && !bytes.Contains(b, []byte("Name:")) {
			t.Errorf("comm %q without a Name line", p.comm)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("/usr/bin/bash\x00-c\x00echo hi\x00"))
	f.Add([]byte("setproctitle style, one string with spaces"))
	f.Add([]byte("\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		trunc := len(b) > maxCmdline
		args, cut := parseCmdline(b, trunc)
		if cut != trunc || len(args) == 0 {
			t.Fatalf("parseCmdline(%q) = %q, %v", b, args, cut)
		}
		in := b
		if trunc {
			in = in[:maxCmdline]
		}
		if got, want := strings.Join(args, "\x00"), string(bytes.TrimSuffix(in, []byte{0})); got != want {
			t.Errorf("arguments %q do not join back to %q", got, want)
		}
	})
}

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/machine/0123456789abcdef0123456789abcdef\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n"))
	f.Add([]byte("0::/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope\n"))
	f.Add([]byte("0::/kubepods/burstable/pod1234/cri-containerd-abcdef0123456789.scope\n"))
	f.Add([]byte("0::/lxc.payload.web01/init.scope\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cg := parseCgroup(b)
		if cg == "" {
			t.Errorf("parseCgroup(%q) is empty; want at least \"/\"", b)
		}
		if c := containerOf(b); c != "" && !strings.Contains(c, ":") {
			t.Errorf("containerOf(%q) = %q, want manager:id", b, c)
		}
	})
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("plain")
	f.Add("quote \" backslash \\ newline \n tab \t nul \x00 del \x7f")
	f.Add("bad utf-8 \xff\xfe and \u2028 and é")
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: not JSON: %v", s, out, err)
		}
		ref, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(ref, &want)
		if got != want {
			t.Errorf("appendJSONString(%q) decodes to %q, encoding/json's to %q", s, got, want)
		}
		if !utf8.Valid(out) {
			t.Errorf("output is not UTF-8: %q", out)
		}
	})
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"))
	f.Add([]byte("# comment\n:x:5:5::/:\nbad\nroot2:x:0:0::/:\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for uid, name := range parsePasswd(b) {
			if name == "" || strings.ContainsAny(name, ":\n") {
				t.Errorf("uid %d maps to bad name %q", uid, name)
			}
		}
	})
}
