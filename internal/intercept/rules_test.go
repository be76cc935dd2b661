package intercept

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestRulesDefault(t *testing.T) {
	got := strings.Join(Rules(DefaultConfig()), "\n")
	want := `*nat
:WSMESH_INBOUND - [0:0]
:WSMESH_IN_REDIRECT - [0:0]
:WSMESH_OUTPUT - [0:0]
:WSMESH_REDIRECT - [0:0]
-A WSMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A WSMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j WSMESH_INBOUND
-A WSMESH_INBOUND -p tcp --dport 15000 -j RETURN
-A WSMESH_INBOUND -p tcp --dport 15001 -j RETURN
-A WSMESH_INBOUND -p tcp --dport 15006 -j RETURN
-A WSMESH_INBOUND -p tcp -j WSMESH_IN_REDIRECT
-A OUTPUT -p tcp -j WSMESH_OUTPUT
-A WSMESH_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A WSMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j WSMESH_IN_REDIRECT
-A WSMESH_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A WSMESH_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A WSMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j WSMESH_IN_REDIRECT
-A WSMESH_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A WSMESH_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A WSMESH_OUTPUT -d 127.0.0.1/32 -j RETURN
-A WSMESH_OUTPUT -j WSMESH_REDIRECT
COMMIT`
	if got != want {
		t.Errorf("Rules(DefaultConfig()):\n%s\nwant:\n%s", got, want)
	}
	v6 := strings.Join(Rules6(DefaultConfig()), "\n")
	if strings.Contains(v6, "127.0.0.1") || !strings.Contains(v6, "-A WSMESH_OUTPUT -o lo ! -d ::1/128 -m owner --uid-owner 1337 -j WSMESH_IN_REDIRECT") ||
		!strings.Contains(v6, "-A WSMESH_OUTPUT -d ::1/128 -j RETURN") || !strings.Contains(v6, "-A WSMESH_OUTPUT -o lo -s ::6/128 -j RETURN") {
		t.Errorf("Rules6 does not use the IPv6 loopback:\n%s", v6)
	}
	if in := RestoreInput(DefaultConfig(), false); in != want+"\n" {
		t.Errorf("RestoreInput differs from Rules:\n%s", in)
	}
}

func TestRulesOptions(t *testing.T) {
	cfg := Config{
		ProxyUID: 2000, OutboundPort: 16001, InboundPort: 16006,
		InboundPorts:         []int{8080, 80, 80, 16001},
		ExcludeOutboundPorts: []int{53, 22},
		IncludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00::1/8")},
		ExcludeOutboundCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.1/32"), netip.MustParsePrefix("10.96.0.1/32")},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got := Rules(cfg)
	for _, want := range []string{
		"-A WSMESH_REDIRECT -p tcp -j REDIRECT --to-ports 16001",
		"-A WSMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006",
		"-A WSMESH_INBOUND -p tcp --dport 80 -j WSMESH_IN_REDIRECT",
		"-A WSMESH_INBOUND -p tcp --dport 8080 -j WSMESH_IN_REDIRECT",
		"-A WSMESH_OUTPUT -p tcp --dport 22 -j RETURN",
		"-A WSMESH_OUTPUT -p tcp --dport 53 -j RETURN",
		"-A WSMESH_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp --dport 80 -m owner --uid-owner 2000 -j WSMESH_IN_REDIRECT",
		"-A WSMESH_OUTPUT -m owner --uid-owner 2000 -j RETURN",
		"-A WSMESH_OUTPUT -d 10.96.0.1/32 -j RETURN",
		"-A WSMESH_OUTPUT -d 10.96.0.0/12 -j WSMESH_REDIRECT",
		"-A WSMESH_OUTPUT -j RETURN",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(got, "\n"))
		}
	}
	for _, bad := range []string{"--gid-owner", "--dport 16001 -j WSMESH_IN_REDIRECT", "-A WSMESH_INBOUND -p tcp -j WSMESH_IN_REDIRECT", "fd00", "-A WSMESH_OUTPUT -j WSMESH_REDIRECT"} {
		for _, l := range got {
			if strings.Contains(l, bad) {
				t.Errorf("unexpected %q in rule %q", bad, l)
			}
		}
	}
	if n := strings.Count(strings.Join(got, "\n"), "-d 10.96.0.1/32 -j RETURN"); n != 1 {
		t.Errorf("duplicate excluded CIDR appears %d times", n)
	}
	// The exclusions come before the redirects.
	if slices.Index(got, "-A WSMESH_OUTPUT -d 10.96.0.1/32 -j RETURN") > slices.Index(got, "-A WSMESH_OUTPUT -d 10.96.0.0/12 -j WSMESH_REDIRECT") {
		t.Error("excluded CIDR after included CIDR")
	}
	v6 := Rules6(cfg)
	if !slices.Contains(v6, "-A WSMESH_OUTPUT -d fd00::/8 -j WSMESH_REDIRECT") || slices.ContainsFunc(v6, func(s string) bool { return strings.Contains(s, "10.96") }) {
		t.Errorf("IPv6 rules mix families:\n%s", strings.Join(v6, "\n"))
	}
}

func TestValidate(t *testing.T) {
	base := DefaultConfig()
	for name, mod := range map[string]func(*Config){
		"root uid":      func(c *Config) { c.ProxyUID = 0 },
		"negative uid":  func(c *Config) { c.ProxyUID = -1 },
		"same ports":    func(c *Config) { c.InboundPort = c.OutboundPort },
		"port 0":        func(c *Config) { c.OutboundPort = 0 },
		"port too big":  func(c *Config) { c.ExcludeInboundPorts = []int{70000} },
		"invalid CIDR":  func(c *Config) { c.ExcludeOutboundCIDRs = []netip.Prefix{{}} },
		"inbound ports": func(c *Config) { c.InboundPorts = []int{-3} },
	} {
		c := base
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
	if err := base.Validate(); err != nil {
		t.Errorf("DefaultConfig invalid: %v", err)
	}
}

// natSaveNft is the nat table with wsmesh's rules and another tool's, as
// iptables-nft-save prints it.
const natSaveNft = `# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OTHER - [0:0]
:WSMESH_INBOUND - [0:0]
:WSMESH_IN_REDIRECT - [0:0]
:WSMESH_OUTPUT - [0:0]
:WSMESH_REDIRECT - [0:0]
-A PREROUTING -p tcp -j WSMESH_INBOUND
-A PREROUTING -j OTHER
-A OUTPUT -p tcp -j WSMESH_OUTPUT
-A OUTPUT -p tcp -j WSMESH_OUTPUT
-A WSMESH_INBOUND -p tcp -m tcp --dport 15000 -j RETURN
-A WSMESH_INBOUND -p tcp -j WSMESH_IN_REDIRECT
-A WSMESH_OUTPUT -j WSMESH_REDIRECT
-A OTHER -p udp -j RETURN
COMMIT
# Completed
`

func TestCleanupInput(t *testing.T) {
	got := CleanupInput(natSaveNft)
	want := `*nat
-D PREROUTING -p tcp -j WSMESH_INBOUND
-D OUTPUT -p tcp -j WSMESH_OUTPUT
-D OUTPUT -p tcp -j WSMESH_OUTPUT
-F WSMESH_INBOUND
-F WSMESH_IN_REDIRECT
-F WSMESH_OUTPUT
-F WSMESH_REDIRECT
-X WSMESH_INBOUND
-X WSMESH_IN_REDIRECT
-X WSMESH_OUTPUT
-X WSMESH_REDIRECT
COMMIT
`
	if got != want {
		t.Errorf("CleanupInput:\n%s\nwant:\n%s", got, want)
	}
	if got := CleanupInput("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j OTHER\nCOMMIT\n"); got != "" {
		t.Errorf("CleanupInput without wsmesh rules = %q, want empty", got)
	}
	if got := CleanupInput(""); got != "" {
		t.Errorf("CleanupInput(\"\") = %q", got)
	}
	static := StaticCleanupInput()
	if !strings.HasPrefix(static, "*nat\n-D PREROUTING -p tcp -j WSMESH_INBOUND\n-D OUTPUT -p tcp -j WSMESH_OUTPUT\n") || !strings.HasSuffix(static, "-X WSMESH_REDIRECT\nCOMMIT\n") {
		t.Errorf("StaticCleanupInput:\n%s", static)
	}
}

func TestPermissionErrors(t *testing.T) {
	for _, msg := range []string{
		"iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
		"iptables-restore v1.8.9 (legacy): iptables-restore: unable to initialize table 'nat'\n\nError occurred at line: 1\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\ncan't initialize iptables table `nat': Permission denied (you must be root)",
		"ip6tables-save v1.8.9 (legacy): Cannot initialize: Operation not permitted",
	} {
		err := fmt.Errorf("applying: %w", &commandError{cmd: "iptables-restore --noflush", output: msg, err: errors.New("exit status 1")})
		if !errors.Is(err, ErrNotPrivileged) {
			t.Errorf("%q not recognised as a permission error", msg)
		}
	}
	err := &commandError{cmd: "iptables-restore", output: "iptables-restore: line 3 failed", err: errors.New("exit status 1")}
	if errors.Is(err, ErrNotPrivileged) {
		t.Error("a syntax error is reported as a permission error")
	}
	if !strings.Contains(ErrNotPrivileged.Error(), "CAP_NET_ADMIN") {
		t.Error(ErrNotPrivileged)
	}
}

// fakeTools simulates installed commands and their save output.
type fakeTools struct {
	installed map[string]bool
	save      map[string]string // command -> iptables-save output
	fail      map[string]string // command -> error output
	calls     []string
}

func (f *fakeTools) look(name string) (string, error) {
	if f.installed[name] {
		return "/sbin/" + name, nil
	}
	return "", exec.ErrNotFound
}

func (f *fakeTools) run(_ context.Context, stdin, name string, args ...string) (string, error) {
	base := strings.TrimPrefix(name, "/sbin/")
	f.calls = append(f.calls, strings.TrimSpace(base+" "+strings.Join(args, " ")))
	if msg, ok := f.fail[base]; ok {
		return "", &commandError{cmd: base, output: msg, err: errors.New("exit status 1")}
	}
	if strings.HasSuffix(base, "-save") {
		return f.save[base], nil
	}
	return "", nil
}

func allTools() map[string]bool {
	m := map[string]bool{}
	for _, v := range []string{"nft", "legacy"} {
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, op := range []string{"save", "restore"} {
				m[fam+"-"+v+"-"+op] = true
			}
		}
	}
	return m
}

func TestDetectBackend(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		installed map[string]bool
		save      map[string]string
		fail      map[string]string
		want      string
		wantErr   error
	}{
		{name: "fresh: nft", installed: allTools(), want: "nft"},
		{name: "legacy holds rules", installed: allTools(), save: map[string]string{"iptables-legacy-save": "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"}, want: "legacy"},
		{name: "legacy holds IPv6 rules", installed: allTools(), save: map[string]string{"ip6tables-legacy-save": "*nat\n-A OUTPUT -j X\nCOMMIT\n"}, want: "legacy"},
		{name: "both hold rules: nft", installed: allTools(), save: map[string]string{"iptables-legacy-save": "-A X", "iptables-nft-save": "-A Y"}, want: "nft"},
		{name: "nft unusable", installed: allTools(), fail: map[string]string{"iptables-nft-save": "Could not fetch rule set generation id: Invalid argument"}, save: map[string]string{"iptables-legacy-save": "-A Z"}, want: "legacy"},
		{name: "only legacy", installed: map[string]bool{"iptables-legacy-save": true, "iptables-legacy-restore": true}, want: "legacy"},
		{name: "plain", installed: map[string]bool{"iptables-save": true, "iptables-restore": true}, want: "iptables"},
		{name: "none", installed: map[string]bool{}, wantErr: exec.ErrNotFound},
		{name: "not privileged", installed: allTools(), fail: map[string]string{"iptables-nft-save": "Permission denied (you must be root)"}, wantErr: ErrNotPrivileged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTools{installed: tt.installed, save: tt.save, fail: tt.fail}
			r := &Runner{run: f.run, look: f.look, skipCapCheck: true}
			b, err := r.DetectBackend(ctx)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || b.Name != tt.want {
				t.Fatalf("DetectBackend = %+v, %v; want %s", b, err, tt.want)
			}
		})
	}
}

func TestApplyReplacesPreviousRules(t *testing.T) {
	f := &fakeTools{installed: allTools(), save: map[string]string{"iptables-nft-save": natSaveNft}}
	r := &Runner{run: f.run, look: f.look, skipCapCheck: true}
	b, err := r.NamedBackend("nft")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.IPv6 = false
	res, err := r.Apply(context.Background(), b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"iptables-nft-save -t nat", "iptables-nft-restore --noflush", "iptables-nft-restore --noflush"}
	if !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q, want %q (cleanup, then apply)", f.calls, want)
	}
	if res.IPv4 != RestoreInput(cfg, false) || res.IPv6 != "" || res.IPv6Skipped == "" {
		t.Errorf("result = %+v", res)
	}
	bad := cfg
	bad.ProxyUID = 0
	if _, err := r.Apply(context.Background(), b, bad); err == nil {
		t.Error("Apply accepted proxy uid 0")
	}
}
