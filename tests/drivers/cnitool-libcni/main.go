// cnitool-libcni drives a conflist through libcni exactly as a runtime does
// (result cache in /var/lib/cni, prevResult on DEL/CHECK, version gating).
//
//	cnitool-libcni <add|del|check|gc|status> <netname> <netns-path> [flags]
//
// The result goes to stdout. On failure the error goes to stdout (as CNI
// error JSON when the plugin returned one) and the exit status is 1; a
// command this libcni cannot run (gc, status: libcni 1.1.2 has no API for
// them) exits 2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const usage = "usage: cnitool-libcni <add|del|check|gc|status> <netname> <netns-path> " +
	"[--ifname eth0] [--id CID] [--args K=V;...] [--capability-args JSON] " +
	"[--confdir DIR] [--path DIR[:DIR]] [--cachedir DIR]"

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	command, netName, netns := os.Args[1], os.Args[2], os.Args[3]

	defaultPath := os.Getenv("CNI_PATH")
	if defaultPath == "" {
		defaultPath = "/opt/cni/bin"
	}
	flags := flag.NewFlagSet("cnitool-libcni", flag.ExitOnError)
	ifName := flags.String("ifname", "eth0", "interface name in the container")
	containerID := flags.String("id", "", "container ID (default: derived from the netns path)")
	cniArgs := flags.String("args", "", "CNI_ARGS, K=V;K=V")
	capArgs := flags.String("capability-args", "", "capability arguments as a JSON object")
	confDir := flags.String("confdir", "/etc/cni/net.d", "directory of network configurations")
	pluginPath := flags.String("path", defaultPath, "plugin directories, colon separated")
	cacheDir := flags.String("cachedir", "", "libcni cache directory (default /var/lib/cni)")
	_ = flags.Parse(os.Args[4:])

	rt := &libcni.RuntimeConf{
		ContainerID: *containerID,
		NetNS:       netns,
		IfName:      *ifName,
	}
	if rt.ContainerID == "" {
		rt.ContainerID = defaultContainerID(netns)
	}
	args, err := parseArgs(*cniArgs)
	if err != nil {
		fail(err)
	}
	rt.Args = args
	if *capArgs != "" {
		if err := json.Unmarshal([]byte(*capArgs), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("--capability-args: %w", err))
		}
	}

	netconf, err := libcni.LoadConfList(*confDir, netName)
	if err != nil {
		fail(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(*pluginPath), *cacheDir, nil)
	ctx := context.Background()

	switch command {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "gc", "status":
		fmt.Fprintf(os.Stderr, "%s: not supported by this libcni (1.1.2 has no GC/STATUS API); "+
			"execute the plugin directly to test it\n", command)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}

// defaultContainerID mirrors upstream cnitool: a stable ID per netns path.
func defaultContainerID(netns string) string {
	return "cnitool-" + strings.ReplaceAll(strings.Trim(netns, "/"), "/", "-")
}

func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	if s == "" {
		return out, nil
	}
	for _, pair := range strings.Split(s, ";") {
		kv := strings.SplitN(pair, "=", 2)
		if len(kv) != 2 {
			return nil, fmt.Errorf("--args: invalid pair %q (want K=V)", pair)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

// fail prints the plugin's CNI error as JSON when there is one, else the text.
func fail(err error) {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		out, _ := json.Marshal(cniErr)
		fmt.Println(string(out))
	} else {
		fmt.Println(err.Error())
	}
	fmt.Fprintln(os.Stderr, err.Error())
	os.Exit(1)
}
