package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wsmesh/wsmesh/internal/intercept"
)

func init() {
	var (
		cfg          = intercept.DefaultConfig()
		includeCIDRs []string
		excludeCIDRs []string
		backendName  string
		dryRun       bool
		cleanup      bool
	)
	cmd := &cobra.Command{
		Use:   "init-iptables",
		Short: "Install the iptables rules that send a pod's TCP traffic through its sidecar",
		Long: `Install the nat rules of transparent interception in this network namespace
(run it as the pod's init container, with NET_ADMIN and NET_RAW):

  inbound  PREROUTING -> WSMESH_INBOUND -> WSMESH_IN_REDIRECT: REDIRECT to --inbound-port
  outbound OUTPUT -> WSMESH_OUTPUT -> WSMESH_REDIRECT: REDIRECT to --outbound-port

Connections of --proxy-uid (the sidecar) are never redirected; the app
talking to itself over loopback stays local. The rules are applied with
iptables-restore --noflush, on the backend (iptables-nft or iptables-legacy)
that already holds rules, else nft; IPv6 too with ip6tables. Rules wsmesh
installed before are replaced, so running it twice is harmless.
--cleanup removes them; --dry-run prints the iptables-restore input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.IncludeOutboundCIDRs, err = parseCIDRs(includeCIDRs); err != nil {
				return fmt.Errorf("--include-outbound-cidrs: %w", err)
			}
			if cfg.ExcludeOutboundCIDRs, err = parseCIDRs(excludeCIDRs); err != nil {
				return fmt.Errorf("--exclude-outbound-cidrs: %w", err)
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dryRun {
				if cleanup {
					fmt.Fprint(out, "# iptables-restore --noflush and ip6tables-restore --noflush (the rules present are read first; this is the full set)\n")
					fmt.Fprint(out, intercept.StaticCleanupInput())
					return nil
				}
				fmt.Fprint(out, "# IPv4: iptables-restore --noflush\n", intercept.RestoreInput(cfg, false))
				if cfg.IPv6 {
					fmt.Fprint(out, "# IPv6: ip6tables-restore --noflush\n", intercept.RestoreInput(cfg, true))
				}
				return nil
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var r intercept.Runner
			var b intercept.Backend
			if backendName == "auto" {
				b, err = r.DetectBackend(ctx)
			} else {
				b, err = r.NamedBackend(backendName)
			}
			if err != nil {
				return privilegeExit(err)
			}
			if cleanup {
				res, err := r.Cleanup(ctx, b)
				if err != nil {
					return privilegeExit(err)
				}
				if res.IPv4 == "" && res.IPv6 == "" {
					fmt.Fprintf(out, "wsmesh init-iptables: no wsmesh rules present (backend %s)\n", b)
					return nil
				}
				fmt.Fprintf(out, "wsmesh init-iptables: removed wsmesh rules (backend %s)\n%s%s", b, res.IPv4, res.IPv6)
				return nil
			}
			res, err := r.Apply(ctx, b, cfg)
			if err != nil {
				return privilegeExit(err)
			}
			fmt.Fprintf(out, "wsmesh init-iptables: backend %s\n# IPv4\n%s", b, res.IPv4)
			if res.IPv6 != "" {
				fmt.Fprintf(out, "# IPv6\n%s", res.IPv6)
			} else {
				fmt.Fprintf(out, "# IPv6 not intercepted: %s\n", res.IPv6Skipped)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.ProxyUID, "proxy-uid", cfg.ProxyUID, "uid of the sidecar, whose connections are not redirected")
	f.IntVar(&cfg.ProxyGID, "proxy-gid", cfg.ProxyGID, "gid whose connections are not redirected either (0: none)")
	f.IntVar(&cfg.OutboundPort, "outbound-port", cfg.OutboundPort, "sidecar port receiving the app's outbound connections")
	f.IntVar(&cfg.InboundPort, "inbound-port", cfg.InboundPort, "sidecar port receiving inbound connections")
	f.IntSliceVar(&cfg.InboundPorts, "inbound-ports", nil, "redirect only inbound connections to these ports (default: every port not excluded)")
	f.IntSliceVar(&cfg.ExcludeInboundPorts, "exclude-inbound-ports", cfg.ExcludeInboundPorts, "inbound ports not redirected (the outbound and inbound ports always are not)")
	f.IntSliceVar(&cfg.ExcludeOutboundPorts, "exclude-outbound-ports", nil, "outbound destination ports not redirected")
	f.StringSliceVar(&includeCIDRs, "include-outbound-cidrs", nil, "redirect only outbound connections to these CIDRs (default or \"*\": every destination)")
	f.StringSliceVar(&excludeCIDRs, "exclude-outbound-cidrs", nil, "outbound destination CIDRs not redirected")
	f.BoolVar(&cfg.IPv6, "ipv6", cfg.IPv6, "also intercept IPv6 with ip6tables when the kernel has IPv6")
	f.StringVar(&backendName, "backend", "auto", "iptables backend: auto, nft or legacy")
	f.BoolVar(&dryRun, "dry-run", false, "print the iptables-restore input instead of applying it")
	f.BoolVar(&cleanup, "cleanup", false, "remove the chains and jumps wsmesh installed")
	rootCmd.AddCommand(cmd)
}

// parseCIDRs reads CIDRs or bare addresses; "*" alone means no list.
func parseCIDRs(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		s = strings.TrimSpace(s)
		if s == "" || s == "*" {
			if len(ss) == 1 {
				return nil, nil
			}
			return nil, fmt.Errorf("%q can only be used alone", s)
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p)
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// privilegeExit turns a missing privilege into the one clear message (exit
// code 2); other errors pass through.
func privilegeExit(err error) error {
	if errors.Is(err, intercept.ErrNotPrivileged) {
		if err.Error() != intercept.ErrNotPrivileged.Error() {
			fmt.Fprintln(os.Stderr, "wsmesh: cause:", err)
		}
		return &exitError{code: 2, err: intercept.ErrNotPrivileged}
	}
	return err
}
