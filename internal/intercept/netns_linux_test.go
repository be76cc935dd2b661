package intercept

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This file tests the rules and OriginalDst against the kernel: it creates
// two network namespaces joined by a veth pair (addresses only inside
// them), installs wsmesh's rules in one ("pod") with each backend, and
// checks where connections land and what OriginalDst reports. Everything
// is removed when the test ends. It needs root and ip netns.

// requireNetns skips unless the test can create network namespaces with
// ip netns and run iptables.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and iptables rules")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) for ip netns: ", err)
	}
	name := fmt.Sprintf("wsmut-probe-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns unavailable: %v: %s", err, out)
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addNetns creates a network namespace removed when the test ends.
func addNetns(t *testing.T, name string) {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
}

// inNetns runs fn on an OS thread switched into network namespace name:
// sockets fn creates belong to it (and keep belonging to it afterwards).
func inNetns(t *testing.T, name string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", name, err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine ends, with its wrong namespace.
			t.Errorf("setns back: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// nsRunner returns a Runner whose commands run in namespace ns.
func nsRunner(ns string) *Runner {
	return &Runner{run: func(ctx context.Context, stdin, name string, args ...string) (string, error) {
		return runCommand(ctx, stdin, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	}}
}

type accepted struct {
	local net.Addr
	dst   netip.AddrPort
	err   error
}

// acceptOne accepts one connection on ln and reports its OriginalDst.
func acceptOne(ln net.Listener) <-chan accepted {
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- accepted{err: err}
			return
		}
		defer c.Close()
		dst, err := OriginalDst(c)
		ch <- accepted{local: c.LocalAddr(), dst: dst, err: err}
	}()
	return ch
}

func TestInterceptionInNetns(t *testing.T) {
	requireNetns(t)
	id := os.Getpid() % 100000
	client := fmt.Sprintf("wsmut-%d-client", id)
	pod := fmt.Sprintf("wsmut-%d-pod", id)
	addNetns(t, client)
	addNetns(t, pod)
	sh(t, "ip", "-n", client, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", pod)
	for _, n := range []struct{ ns, v4, v6 string }{
		{client, "10.250.9.1/24", "fd00:250:9::1/64"},
		{pod, "10.250.9.2/24", "fd00:250:9::2/64"},
	} {
		sh(t, "ip", "-n", n.ns, "addr", "add", n.v4, "dev", "eth0")
		sh(t, "ip", "-n", n.ns, "-6", "addr", "add", n.v6, "dev", "eth0", "nodad")
		sh(t, "ip", "-n", n.ns, "link", "set", "eth0", "up")
	}

	r := nsRunner(pod)
	ctx := context.Background()
	var backends []Backend
	for _, name := range []string{"nft", "legacy"} {
		if b, err := r.NamedBackend(name); err == nil {
			backends = append(backends, b)
		} else {
			t.Logf("backend %s not installed: %v", name, err)
		}
	}
	if len(backends) == 0 {
		t.Skip("no iptables installed (Debian package iptables)")
	}
	if b, err := r.DetectBackend(ctx); err != nil || b.Name != backends[0].Name {
		t.Errorf("DetectBackend in a fresh namespace = %v, %v; want %s", b, err, backends[0].Name)
	}
	for _, b := range backends {
		t.Run(b.Name, func(t *testing.T) {
			res, err := r.Apply(ctx, b, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if _, err := r.Cleanup(ctx, b); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			if res.IPv6 == "" {
				t.Fatalf("IPv6 rules not applied: %s", res.IPv6Skipped)
			}
			// Applying again replaces, not duplicates.
			if _, err := r.Apply(ctx, b, DefaultConfig()); err != nil {
				t.Fatal(err)
			}
			for _, v6 := range []bool{false, true} {
				nat, err := r.NatTable(ctx, b, v6)
				if err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(nat, "-j WSMESH_INBOUND"); n != 1 {
					t.Errorf("after two applies (v6=%v), %d jumps to WSMESH_INBOUND:\n%s", v6, n, nat)
				}
			}
			if b.Name == "legacy" && len(backends) == 2 {
				// nft's tables are empty again: legacy is the one with rules.
				if got, err := r.DetectBackend(ctx); err != nil || got.Name != "legacy" {
					t.Errorf("DetectBackend with legacy rules = %v, %v", got, err)
				}
			}
			checkRedirects(t, client, pod)

			if _, err := r.Cleanup(ctx, b); err != nil {
				t.Fatal(err)
			}
			for _, v6 := range []bool{false, true} {
				nat, err := r.NatTable(ctx, b, v6)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(nat, "WSMESH") {
					t.Errorf("after cleanup (v6=%v):\n%s", v6, nat)
				}
			}
		})
	}
}

// checkRedirects makes connections into and out of the pod namespace and
// checks the listener each reaches and its OriginalDst.
func checkRedirects(t *testing.T, client, pod string) {
	var inbound, outbound, admin net.Listener
	inNetns(t, pod, func() {
		var err error
		// Dual stack: IPv4 connections arrive as ::ffff:a.b.c.d.
		if inbound, err = net.Listen("tcp", ":15006"); err != nil {
			t.Fatal(err)
		}
		if outbound, err = net.Listen("tcp", ":15001"); err != nil {
			t.Fatal(err)
		}
		if admin, err = net.Listen("tcp4", "0.0.0.0:15000"); err != nil {
			t.Fatal(err)
		}
	})
	defer inbound.Close()
	defer outbound.Close()
	defer admin.Close()

	tests := []struct {
		name string
		from string
		ln   net.Listener
		dial string
		want string
	}{
		{"inbound IPv4", client, inbound, "10.250.9.2:80", "10.250.9.2:80"},
		{"inbound IPv6", client, inbound, "[fd00:250:9::2]:8443", "[fd00:250:9::2]:8443"},
		{"outbound IPv4", pod, outbound, "10.250.9.1:8080", "10.250.9.1:8080"},
		{"outbound IPv6", pod, outbound, "[fd00:250:9::1]:9090", "[fd00:250:9::1]:9090"},
		{"outbound to a cluster IP", pod, outbound, "10.250.9.77:443", "10.250.9.77:443"},
		// Excluded: reaches the admin listener itself, not translated.
		{"inbound excluded port", client, admin, "10.250.9.2:15000", "10.250.9.2:15000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch := acceptOne(tt.ln)
			var c net.Conn
			inNetns(t, tt.from, func() {
				var err error
				c, err = net.DialTimeout("tcp", tt.dial, 3*time.Second)
				if err != nil {
					t.Fatalf("dial %s from %s: %v", tt.dial, tt.from, err)
				}
			})
			defer c.Close()
			select {
			case a := <-ch:
				if a.err != nil {
					t.Fatalf("OriginalDst: %v", a.err)
				}
				if a.dst.String() != tt.want {
					t.Errorf("OriginalDst = %s, want %s (accepted on %s)", a.dst, tt.want, a.local)
				}
			case <-time.After(5 * time.Second):
				_ = tt.ln.(*net.TCPListener).SetDeadline(time.Now()) // unblock the accept
				<-ch
				_ = tt.ln.(*net.TCPListener).SetDeadline(time.Time{})
				t.Fatalf("no connection reached %s", tt.ln.Addr())
			}
		})
	}

	// The app talking to itself over loopback is not redirected.
	t.Run("loopback stays local", func(t *testing.T) {
		var ln net.Listener
		inNetns(t, pod, func() {
			var err error
			if ln, err = net.Listen("tcp4", "127.0.0.1:8081"); err != nil {
				t.Fatal(err)
			}
		})
		defer ln.Close()
		ch := acceptOne(ln)
		inNetns(t, pod, func() {
			c, err := net.DialTimeout("tcp", "127.0.0.1:8081", 3*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
		a := <-ch
		if a.err != nil || a.dst.String() != "127.0.0.1:8081" {
			t.Errorf("OriginalDst = %v, %v; want 127.0.0.1:8081", a.dst, a.err)
		}
	})
}

func TestOriginalDstErrors(t *testing.T) {
	if _, err := OriginalDst(nil2Conn{}); err == nil {
		t.Error("OriginalDst of a non-socket succeeded")
	}
	// A loopback connection without nat rules: either its own address
	// (conntrack loaded) or ErrNoOriginalDst.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := acceptOne(ln)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-ch
	if a.err != nil {
		if !errors.Is(a.err, ErrNoOriginalDst) {
			t.Errorf("OriginalDst of an untracked connection: %v", a.err)
		}
	} else if a.dst.String() != ln.Addr().String() {
		t.Errorf("OriginalDst of an untranslated connection = %s, want %s", a.dst, ln.Addr())
	}
}

type nil2Conn struct{ net.Conn }
