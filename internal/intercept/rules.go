// Package intercept implements wsmesh's transparent interception on Linux:
// the iptables nat rules that send a pod's TCP traffic through its sidecar
// (outbound to the outbound port, inbound to the inbound port, the sidecar's
// own traffic excluded by its uid), applying and removing them with
// iptables-restore on the nft or legacy backend for IPv4 and IPv6, and
// OriginalDst, which recovers a redirected connection's original
// destination (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
//
// The rules follow Istio's istio-iptables in REDIRECT mode, with wsmesh's
// chain names:
//
//	PREROUTING -p tcp -> WSMESH_INBOUND -> (excluded ports RETURN) -> WSMESH_IN_REDIRECT -> REDIRECT :15006
//	OUTPUT     -p tcp -> WSMESH_OUTPUT  -> (proxy uid/gid, loopback, excluded CIDRs RETURN) -> WSMESH_REDIRECT -> REDIRECT :15001
package intercept

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Chain names. They are the only chains wsmesh creates, all in the nat
// table; Cleanup removes them and the jumps to them.
const (
	ChainInbound    = "WSMESH_INBOUND"
	ChainInRedirect = "WSMESH_IN_REDIRECT"
	ChainOutput     = "WSMESH_OUTPUT"
	ChainRedirect   = "WSMESH_REDIRECT"
)

// Chains lists the chains wsmesh creates, in creation order.
var Chains = []string{ChainInbound, ChainInRedirect, ChainOutput, ChainRedirect}

// Default ports and identity, as the injected sidecar uses them.
const (
	DefaultProxyUID     = 1337
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultAdminPort    = 15000
)

// Config says what to intercept.
type Config struct {
	// ProxyUID is the uid the sidecar runs as; its own connections are
	// never redirected (else they would loop back into it).
	ProxyUID int
	// ProxyGID, when positive, also excludes connections of processes
	// running with this gid, as Istio does. 0 or negative: no gid rules.
	ProxyGID int
	// OutboundPort is where the sidecar accepts the app's redirected
	// outbound connections; InboundPort where it accepts redirected inbound
	// connections. Both are always excluded from inbound redirection.
	OutboundPort int
	InboundPort  int
	// InboundPorts, when not empty, redirects only inbound connections to
	// these ports; empty redirects every inbound port not excluded.
	InboundPorts []int
	// ExcludeInboundPorts are inbound destination ports left alone (the
	// admin port 15000 by default).
	ExcludeInboundPorts []int
	// ExcludeOutboundPorts are outbound destination ports left alone.
	ExcludeOutboundPorts []int
	// IncludeOutboundCIDRs, when not empty, redirects only outbound
	// connections to these destinations (per address family: a family
	// with no entry here is not redirected at all). Empty means every
	// destination.
	IncludeOutboundCIDRs []netip.Prefix
	// ExcludeOutboundCIDRs are outbound destinations left alone.
	ExcludeOutboundCIDRs []netip.Prefix
	// IPv6 also intercepts IPv6 (ip6tables) when the kernel has IPv6.
	IPv6 bool
}

// DefaultConfig returns the configuration the injected init container
// uses: uid and gid 1337, outbound 15001, inbound 15006, every inbound
// port except the admin port 15000, every outbound destination, IPv4 and
// IPv6.
func DefaultConfig() Config {
	return Config{
		ProxyUID:            DefaultProxyUID,
		ProxyGID:            DefaultProxyUID,
		OutboundPort:        DefaultOutboundPort,
		InboundPort:         DefaultInboundPort,
		ExcludeInboundPorts: []int{DefaultAdminPort},
		IPv6:                true,
	}
}

// Validate reports a configuration that cannot produce working rules.
func (c Config) Validate() error {
	if c.ProxyUID < 0 {
		return fmt.Errorf("proxy uid %d: must not be negative", c.ProxyUID)
	}
	if c.ProxyUID == 0 {
		return fmt.Errorf("proxy uid 0: the sidecar must not run as root, or the app's root processes would bypass it")
	}
	check := func(what string, ports ...int) error {
		for _, p := range ports {
			if p < 1 || p > 65535 {
				return fmt.Errorf("%s %d: not a port (1-65535)", what, p)
			}
		}
		return nil
	}
	if err := check("outbound port", c.OutboundPort); err != nil {
		return err
	}
	if err := check("inbound port", c.InboundPort); err != nil {
		return err
	}
	if c.OutboundPort == c.InboundPort {
		return fmt.Errorf("outbound and inbound ports are both %d", c.OutboundPort)
	}
	if err := check("inbound port to intercept", c.InboundPorts...); err != nil {
		return err
	}
	if err := check("excluded inbound port", c.ExcludeInboundPorts...); err != nil {
		return err
	}
	if err := check("excluded outbound port", c.ExcludeOutboundPorts...); err != nil {
		return err
	}
	for _, p := range slices.Concat(c.IncludeOutboundCIDRs, c.ExcludeOutboundCIDRs) {
		if !p.IsValid() {
			return fmt.Errorf("invalid CIDR %v", p)
		}
	}
	return nil
}

// Rules returns the IPv4 nat rules for cfg as iptables-restore input
// lines, from "*nat" to "COMMIT" (apply with iptables-restore --noflush).
func Rules(cfg Config) []string { return rules(cfg, false) }

// Rules6 returns the IPv6 nat rules for cfg as ip6tables-restore input
// lines.
func Rules6(cfg Config) []string { return rules(cfg, true) }

// RestoreInput is Rules (or Rules6 when v6) joined as one
// iptables-restore input, ending in a newline.
func RestoreInput(cfg Config, v6 bool) string {
	return strings.Join(rules(cfg, v6), "\n") + "\n"
}

func rules(cfg Config, v6 bool) []string {
	loopback, passthroughSrc := "127.0.0.1/32", "127.0.0.6/32"
	if v6 {
		loopback, passthroughSrc = "::1/128", "::6/128"
	}
	uid := strconv.Itoa(cfg.ProxyUID)
	out := []string{"*nat"}
	for _, c := range Chains {
		out = append(out, ":"+c+" - [0:0]")
	}
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }

	// Redirect targets.
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainRedirect, cfg.OutboundPort)
	add("-A %s -p tcp -j REDIRECT --to-ports %d", ChainInRedirect, cfg.InboundPort)

	// Inbound: everything arriving from the network, except the sidecar's
	// own ports and the excluded ones.
	add("-A PREROUTING -p tcp -j %s", ChainInbound)
	excludedIn := uniqueSorted(append([]int{cfg.OutboundPort, cfg.InboundPort}, cfg.ExcludeInboundPorts...))
	if len(cfg.InboundPorts) == 0 {
		for _, p := range excludedIn {
			add("-A %s -p tcp --dport %d -j RETURN", ChainInbound, p)
		}
		add("-A %s -p tcp -j %s", ChainInbound, ChainInRedirect)
	} else {
		for _, p := range uniqueSorted(cfg.InboundPorts) {
			if !slices.Contains(excludedIn, p) {
				add("-A %s -p tcp --dport %d -j %s", ChainInbound, p, ChainInRedirect)
			}
		}
	}

	// Outbound: the app's connections, not the sidecar's.
	add("-A OUTPUT -p tcp -j %s", ChainOutput)
	for _, p := range uniqueSorted(cfg.ExcludeOutboundPorts) {
		add("-A %s -p tcp --dport %d -j RETURN", ChainOutput, p)
	}
	// Connections from the inbound passthrough source address (Istio's
	// 127.0.0.6, used to reach the app on the pod address) go to the app.
	add("-A %s -o lo -s %s -j RETURN", ChainOutput, passthroughSrc)
	owners := []string{"--uid-owner " + uid}
	if cfg.ProxyGID > 0 {
		owners = append(owners, "--gid-owner "+strconv.Itoa(cfg.ProxyGID))
	}
	for _, owner := range owners {
		neg := strings.Replace(owner, "--", "! --", 1)
		// The sidecar calling its own pod address (over lo, not to
		// loopback) is an inbound call to the app: send it to the
		// inbound port, as Istio does.
		if len(cfg.InboundPorts) == 0 {
			add("-A %s -o lo ! -d %s -m owner %s -j %s", ChainOutput, loopback, owner, ChainInRedirect)
		} else {
			for _, p := range uniqueSorted(cfg.InboundPorts) {
				if !slices.Contains(excludedIn, p) {
					add("-A %s -o lo ! -d %s -p tcp --dport %d -m owner %s -j %s", ChainOutput, loopback, p, owner, ChainInRedirect)
				}
			}
		}
		// The app talking to itself over lo stays local.
		add("-A %s -o lo -m owner %s -j RETURN", ChainOutput, neg)
		// The sidecar's own connections go out unchanged.
		add("-A %s -m owner %s -j RETURN", ChainOutput, owner)
	}
	add("-A %s -d %s -j RETURN", ChainOutput, loopback)
	for _, p := range familyPrefixes(cfg.ExcludeOutboundCIDRs, v6) {
		add("-A %s -d %s -j RETURN", ChainOutput, p)
	}
	if len(cfg.IncludeOutboundCIDRs) == 0 {
		add("-A %s -j %s", ChainOutput, ChainRedirect)
	} else {
		for _, p := range familyPrefixes(cfg.IncludeOutboundCIDRs, v6) {
			add("-A %s -d %s -j %s", ChainOutput, p, ChainRedirect)
		}
		add("-A %s -j RETURN", ChainOutput)
	}
	out = append(out, "COMMIT")
	return out
}

// familyPrefixes returns the prefixes of one address family, masked and
// deduplicated in their given order.
func familyPrefixes(ps []netip.Prefix, v6 bool) []string {
	var out []string
	for _, p := range ps {
		p = p.Masked()
		if p.Addr().Is4() == v6 {
			continue
		}
		s := p.String()
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func uniqueSorted(ps []int) []int {
	out := slices.Clone(ps)
	slices.Sort(out)
	return slices.Compact(out)
}

// CleanupInput returns the iptables-restore --noflush input that removes
// everything wsmesh installed, given the nat table as iptables-save -t nat
// prints it: the jumps from built-in chains to WSMESH_ chains are deleted,
// then the WSMESH_ chains are flushed and deleted. It returns "" when
// nothing of wsmesh's is present.
func CleanupInput(natSave string) string {
	var dels, chains []string
	for _, line := range strings.Split(natSave, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, ":WSMESH_"):
			name, _, _ := strings.Cut(line[1:], " ")
			chains = append(chains, name)
		case strings.HasPrefix(line, "-A "):
			fields := strings.Fields(line)
			if len(fields) < 2 || strings.HasPrefix(fields[1], "WSMESH_") {
				continue // inside a wsmesh chain: goes with the flush
			}
			if jumpsToWsmesh(fields) {
				dels = append(dels, "-D"+line[2:])
			}
		}
	}
	if len(dels) == 0 && len(chains) == 0 {
		return ""
	}
	out := []string{"*nat"}
	out = append(out, dels...)
	for _, c := range chains {
		out = append(out, "-F "+c)
	}
	for _, c := range chains {
		out = append(out, "-X "+c)
	}
	out = append(out, "COMMIT")
	return strings.Join(out, "\n") + "\n"
}

func jumpsToWsmesh(fields []string) bool {
	for i := 0; i+1 < len(fields); i++ {
		if (fields[i] == "-j" || fields[i] == "-g" || fields[i] == "--jump" || fields[i] == "--goto") && strings.HasPrefix(fields[i+1], "WSMESH_") {
			return true
		}
	}
	return false
}

// StaticCleanupInput is the cleanup input for the rules wsmesh installs by
// default, for display (wsmesh init-iptables --cleanup --dry-run): the
// jumps from PREROUTING and OUTPUT, then every wsmesh chain flushed and
// deleted. Cleanup itself reads the live table instead, so it also works
// when only part of the rules are present.
func StaticCleanupInput() string {
	out := []string{
		"*nat",
		"-D PREROUTING -p tcp -j " + ChainInbound,
		"-D OUTPUT -p tcp -j " + ChainOutput,
	}
	for _, c := range Chains {
		out = append(out, "-F "+c)
	}
	for _, c := range Chains {
		out = append(out, "-X "+c)
	}
	out = append(out, "COMMIT")
	return strings.Join(out, "\n") + "\n"
}
