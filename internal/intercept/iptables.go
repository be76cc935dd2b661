package intercept

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// ErrNotPrivileged is returned when changing (or reading) the nat table
// is not allowed.
var ErrNotPrivileged = errors.New("wsmesh init-iptables needs CAP_NET_ADMIN (run as root or in an init container with NET_ADMIN)")

// Backend names the iptables commands used: the nft or legacy variant
// (both speak the same iptables-restore language), for IPv4 and IPv6.
type Backend struct {
	// Name is "nft", "legacy", or "iptables" for the plain commands of
	// unknown flavour.
	Name string
	// Save and Restore are the IPv4 commands (iptables-nft-save, ...).
	Save, Restore string
	// Save6 and Restore6 are the IPv6 commands; empty when not installed.
	Save6, Restore6 string
}

// String describes the backend for messages.
func (b Backend) String() string {
	return fmt.Sprintf("%s (%s, %s)", b.Name, b.Restore, orNone(b.Restore6))
}

func orNone(s string) string {
	if s == "" {
		return "no IPv6 command"
	}
	return s
}

// runFunc runs a command with stdin and returns its standard output, or an
// error carrying its standard error.
type runFunc func(ctx context.Context, stdin string, name string, args ...string) (string, error)

// lookFunc finds a command like exec.LookPath.
type lookFunc func(name string) (string, error)

// Runner applies and removes wsmesh's rules. The zero value runs the real
// commands found on PATH (plus /usr/sbin and /sbin).
type Runner struct {
	run  runFunc
	look lookFunc
	// skipCapCheck disables the CAP_NET_ADMIN pre-check (tests).
	skipCapCheck bool
}

func (r *Runner) runner() runFunc {
	if r != nil && r.run != nil {
		return r.run
	}
	return runCommand
}

func (r *Runner) lookPath(name string) (string, error) {
	if r != nil && r.look != nil {
		return r.look(name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH, /usr/sbin or /sbin", name)
}

func runCommand(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.String(), &commandError{cmd: name + " " + strings.Join(args, " "), output: msg, err: err}
	}
	return stdout.String(), nil
}

// commandError is a failed iptables command and what it printed.
type commandError struct {
	cmd, output string
	err         error
}

func (e *commandError) Error() string {
	if e.output == "" {
		return fmt.Sprintf("%s: %v", e.cmd, e.err)
	}
	return fmt.Sprintf("%s: %v: %s", e.cmd, e.err, e.output)
}

func (e *commandError) Unwrap() []error {
	if isPermissionMessage(e.output) {
		return []error{e.err, ErrNotPrivileged}
	}
	return []error{e.err}
}

// isPermissionMessage recognises the iptables tools' wording for EPERM and
// EACCES on the nat table, in both backends.
func isPermissionMessage(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "permission denied") || strings.Contains(s, "operation not permitted") || strings.Contains(s, "you must be root")
}

// DetectBackend chooses between iptables-nft and iptables-legacy: the one
// that already holds rules in this network namespace (IPv4 or IPv6), else
// nft if installed, else legacy, else the plain iptables-save and
// iptables-restore commands. A variant whose save command fails for lack
// of privilege makes DetectBackend return ErrNotPrivileged.
func (r *Runner) DetectBackend(ctx context.Context) (Backend, error) {
	if err := r.checkPrivilege(); err != nil {
		return Backend{}, err
	}
	var found []Backend
	for _, name := range []string{"nft", "legacy"} {
		if b, err := r.NamedBackend(name); err == nil {
			found = append(found, b)
		}
	}
	if len(found) == 0 {
		b := Backend{Name: "iptables"}
		var err error
		if b.Save, err = r.lookPath("iptables-save"); err != nil {
			return Backend{}, fmt.Errorf("no iptables found (install iptables: iptables-nft or iptables-legacy): %w", err)
		}
		if b.Restore, err = r.lookPath("iptables-restore"); err != nil {
			return Backend{}, fmt.Errorf("no iptables-restore found (install iptables): %w", err)
		}
		s6, err6 := r.lookPath("ip6tables-save")
		r6, err7 := r.lookPath("ip6tables-restore")
		if err6 == nil && err7 == nil {
			b.Save6, b.Restore6 = s6, r6
		}
		return b, nil
	}
	for _, b := range found {
		n, err := r.countRules(ctx, b)
		if err != nil {
			if errors.Is(err, ErrNotPrivileged) {
				return Backend{}, err
			}
			continue // e.g. a kernel without nf_tables: this variant is unusable
		}
		if n > 0 {
			return b, nil
		}
	}
	return found[0], nil
}

// NamedBackend returns the commands of the "nft" or "legacy" backend, or
// an error if its IPv4 commands are not installed.
func (r *Runner) NamedBackend(name string) (Backend, error) {
	if name != "nft" && name != "legacy" {
		return Backend{}, fmt.Errorf("iptables backend %q: use nft or legacy", name)
	}
	b := Backend{Name: name}
	var err error
	if b.Save, err = r.lookPath("iptables-" + name + "-save"); err != nil {
		return Backend{}, err
	}
	if b.Restore, err = r.lookPath("iptables-" + name + "-restore"); err != nil {
		return Backend{}, err
	}
	s6, err6 := r.lookPath("ip6tables-" + name + "-save")
	r6, err7 := r.lookPath("ip6tables-" + name + "-restore")
	if err6 == nil && err7 == nil {
		b.Save6, b.Restore6 = s6, r6
	}
	return b, nil
}

// countRules counts the rules of every table a backend shows, IPv4 and
// IPv6.
func (r *Runner) countRules(ctx context.Context, b Backend) (int, error) {
	n := 0
	for _, save := range []string{b.Save, b.Save6} {
		if save == "" {
			continue
		}
		out, err := r.runner()(ctx, "", save)
		if err != nil {
			if save == b.Save {
				return 0, err
			}
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "-A ") {
				n++
			}
		}
	}
	return n, nil
}

// checkPrivilege fails early, with ErrNotPrivileged, when the process's
// effective capabilities lack CAP_NET_ADMIN.
func (r *Runner) checkPrivilege() error {
	if r != nil && r.skipCapCheck {
		return nil
	}
	ok, known := hasNetAdmin()
	if known && !ok {
		return ErrNotPrivileged
	}
	return nil
}

// hasNetAdmin reads CapEff from /proc/self/status. known is false when
// that is not possible (not Linux, no /proc).
func hasNetAdmin() (ok, known bool) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, found := strings.CutPrefix(line, "CapEff:"); found {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, false
			}
			const capNetAdmin = 12
			return caps&(1<<capNetAdmin) != 0, true
		}
	}
	return false, false
}

// ipv6Available reports whether the kernel has IPv6 (it is absent with
// ipv6.disable=1).
func ipv6Available() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

// Result says what Apply or Cleanup did.
type Result struct {
	Backend Backend
	// IPv4 and IPv6 are the iptables-restore inputs applied ("" when that
	// family was not touched).
	IPv4, IPv6 string
	// IPv6Skipped explains why IPv6 was not touched, if it was not.
	IPv6Skipped string
}

// Apply installs cfg's rules with the backend b: whatever wsmesh installed
// before is removed first, so applying twice (an init container restarted)
// leaves one set of rules. IPv6 rules are applied when cfg.IPv6 is set and
// the kernel has IPv6; it is an error if the ip6tables commands are then
// missing.
func (r *Runner) Apply(ctx context.Context, b Backend, cfg Config) (Result, error) {
	res := Result{Backend: b}
	if err := cfg.Validate(); err != nil {
		return res, err
	}
	if err := r.checkPrivilege(); err != nil {
		return res, err
	}
	v6, why := r.useIPv6(b, cfg.IPv6)
	res.IPv6Skipped = why
	if cfg.IPv6 && !v6 && b.Restore6 == "" && ipv6Available() {
		return res, fmt.Errorf("IPv6 is enabled in the kernel but %s has no ip6tables commands; install them or pass --ipv6=false", b.Name)
	}
	if err := r.cleanupFamily(ctx, b.Save, b.Restore); err != nil {
		return res, fmt.Errorf("removing previous IPv4 rules: %w", err)
	}
	in := RestoreInput(cfg, false)
	if _, err := r.runner()(ctx, in, b.Restore, "--noflush"); err != nil {
		return res, fmt.Errorf("applying IPv4 rules: %w", err)
	}
	res.IPv4 = in
	if v6 {
		if err := r.cleanupFamily(ctx, b.Save6, b.Restore6); err != nil {
			return res, fmt.Errorf("removing previous IPv6 rules: %w", err)
		}
		in6 := RestoreInput(cfg, true)
		if _, err := r.runner()(ctx, in6, b.Restore6, "--noflush"); err != nil {
			return res, fmt.Errorf("applying IPv6 rules: %w", err)
		}
		res.IPv6 = in6
	}
	return res, nil
}

func (r *Runner) useIPv6(b Backend, want bool) (bool, string) {
	switch {
	case !want:
		return false, "disabled (--ipv6=false)"
	case !ipv6Available():
		return false, "the kernel has no IPv6"
	case b.Restore6 == "":
		return false, "no ip6tables commands"
	}
	return true, ""
}

// Cleanup removes every chain and jump wsmesh installed, IPv4 and IPv6
// (where the commands exist). Absent rules are not an error.
func (r *Runner) Cleanup(ctx context.Context, b Backend) (Result, error) {
	res := Result{Backend: b}
	if err := r.checkPrivilege(); err != nil {
		return res, err
	}
	in, err := r.cleanupInput(ctx, b.Save)
	if err != nil {
		return res, fmt.Errorf("reading IPv4 nat table: %w", err)
	}
	if in != "" {
		if _, err := r.runner()(ctx, in, b.Restore, "--noflush"); err != nil {
			return res, fmt.Errorf("removing IPv4 rules: %w", err)
		}
	}
	res.IPv4 = in
	if b.Save6 == "" || !ipv6Available() {
		res.IPv6Skipped = "no IPv6"
		return res, nil
	}
	in6, err := r.cleanupInput(ctx, b.Save6)
	if err != nil {
		return res, fmt.Errorf("reading IPv6 nat table: %w", err)
	}
	if in6 != "" {
		if _, err := r.runner()(ctx, in6, b.Restore6, "--noflush"); err != nil {
			return res, fmt.Errorf("removing IPv6 rules: %w", err)
		}
	}
	res.IPv6 = in6
	return res, nil
}

func (r *Runner) cleanupFamily(ctx context.Context, save, restore string) error {
	in, err := r.cleanupInput(ctx, save)
	if err != nil || in == "" {
		return err
	}
	_, err = r.runner()(ctx, in, restore, "--noflush")
	return err
}

func (r *Runner) cleanupInput(ctx context.Context, save string) (string, error) {
	out, err := r.runner()(ctx, "", save, "-t", "nat")
	if err != nil {
		return "", err
	}
	return CleanupInput(out), nil
}

// NatTable returns the nat table as the backend's save command prints it
// (IPv6 when v6), for diagnostics and tests.
func (r *Runner) NatTable(ctx context.Context, b Backend, v6 bool) (string, error) {
	save := b.Save
	if v6 {
		save = b.Save6
	}
	if save == "" {
		return "", fmt.Errorf("backend %s has no IPv6 save command", b.Name)
	}
	return r.runner()(ctx, "", save, "-t", "nat")
}
