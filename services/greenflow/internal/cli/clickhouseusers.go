package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/greenflow/greenflow/pkg/chserver"
)

// runClickHouseUsers prints the users.xml of a ClickHouse server for a real
// deployment: the writer and the reader (pkg/chserver, the same users the
// dev stack's server has) with SHA-256 hashes of their passwords, allowed
// from --network. The passwords are made in --secrets-dir (0600) when
// missing and never printed: they go into Kubernetes Secrets (the
// services' DSNs), the hashes into ClickHouse's users.xml, and neither into
// git.
func runClickHouseUsers(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("clickhouse-users", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("secrets-dir", "", "directory of the users' passwords, secrets/<user>.password (made when missing, mode 0600)")
	var networks []string
	fs.Func("network", "address or CIDR the users may connect from (repeatable; default ::/0, any: the NetworkPolicy bounds who reaches the server)",
		func(v string) error {
			n, err := clickHouseNetwork(v)
			if err != nil {
				return err
			}
			networks = append(networks, n)
			return nil
		})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("--secrets-dir: a directory for the users' passwords is required")
	}
	if len(networks) == 0 {
		networks = []string{"::/0"}
	}
	passwords, err := chserver.EnsurePasswords(*dir)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, chserver.UsersXML(passwords, networks...))
	return err
}

// clickHouseNetwork is an address or CIDR as ClickHouse's <ip> must hold
// it. ClickHouse 18.16 applies an IPv4 CIDR's prefix length to the
// IPv4-mapped IPv6 address it compares with, so 10.0.0.0/8 admits every
// IPv4 client (measured: 127.0.0.1 is let in by 10.0.0.0/8 and by
// 203.0.113.7/32); an IPv4 CIDR is therefore written in its IPv4-mapped
// IPv6 form, ::ffff:10.0.0.0/104, which it compares right.
func clickHouseNetwork(v string) (string, error) {
	if ip := net.ParseIP(v); ip != nil {
		return v, nil
	}
	ip, cidr, err := net.ParseCIDR(v)
	if err != nil {
		return "", fmt.Errorf("%q is neither an IP address nor a CIDR (e.g. 10.244.0.0/16)", v)
	}
	if ip.To4() == nil {
		return v, nil
	}
	ones, _ := cidr.Mask.Size()
	return fmt.Sprintf("::ffff:%s/%d", cidr.IP.To4(), 96+ones), nil
}
