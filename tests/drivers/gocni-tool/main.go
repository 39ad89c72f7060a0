// gocni-tool drives the node's CNI configuration through containerd's go-cni
// the way containerd's CRI plugin does for a pod sandbox: loopback network
// plus the first config in the conf dir, containerd's labels as CNI_ARGS,
// port mappings as a capability.
//
//	gocni-tool <add|del|check> <netns-path> [flags]
//
// add prints the go-cni Result (what containerd records) as JSON. Failures
// print the error text on stdout and exit 1. Note that check always fails
// here: go-cni's built-in loopback network is cniVersion 0.3.1, for which
// libcni refuses CHECK.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

const usage = "usage: gocni-tool <add|del|check> <netns-path> [--id CID] [--confdir DIR] " +
	"[--bindir DIR] [--pod-name N] [--pod-namespace NS] [--pod-uid UID] [--portmap JSON]"

// output is gocni.Result with its raw per-network results made visible.
type output struct {
	Interfaces map[string]*gocni.Config
	DNS        []types.DNS
	Routes     []*types.Route
	Raw        []*types100.Result
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	command, netns := os.Args[1], os.Args[2]

	flags := flag.NewFlagSet("gocni-tool", flag.ExitOnError)
	id := flags.String("id", "sandbox0", "sandbox (infra container) ID")
	confDir := flags.String("confdir", gocni.DefaultNetDir, "CNI configuration directory")
	binDir := flags.String("bindir", gocni.DefaultCNIDir, "CNI plugin directory")
	podName := flags.String("pod-name", "pod0", "K8S_POD_NAME")
	podNamespace := flags.String("pod-namespace", "default", "K8S_POD_NAMESPACE")
	podUID := flags.String("pod-uid", "00000000-0000-0000-0000-000000000000", "K8S_POD_UID")
	portMap := flags.String("portmap", "", "port mappings, JSON list of {HostPort, ContainerPort, Protocol, HostIP}")
	_ = flags.Parse(os.Args[3:])

	// containerd's CRI: New with these options, then Load(lo, default conf).
	cni, err := gocni.New(
		gocni.WithMinNetworkCount(2),
		gocni.WithPluginConfDir(*confDir),
		gocni.WithPluginDir([]string{*binDir}),
		gocni.WithInterfacePrefix("eth"),
	)
	if err != nil {
		fail(err)
	}
	if err := cni.Load(gocni.WithLoNetwork, gocni.WithDefaultConf); err != nil {
		fail(err)
	}

	// containerd's toCNILabels.
	labels := map[string]string{
		"IgnoreUnknown":              "1",
		"K8S_POD_NAMESPACE":          *podNamespace,
		"K8S_POD_NAME":               *podName,
		"K8S_POD_INFRA_CONTAINER_ID": *id,
		"K8S_POD_UID":                *podUID,
	}
	opts := []gocni.NamespaceOpts{gocni.WithLabels(labels)}
	if *portMap != "" {
		var mappings []gocni.PortMapping
		if err := json.Unmarshal([]byte(*portMap), &mappings); err != nil {
			fail(fmt.Errorf("--portmap: %w", err))
		}
		opts = append(opts, gocni.WithCapabilityPortMap(mappings))
	}

	ctx := context.Background()
	switch command {
	case "add":
		result, err := cni.Setup(ctx, *id, netns, opts...)
		if err != nil {
			fail(err)
		}
		out, err := json.MarshalIndent(output{result.Interfaces, result.DNS, result.Routes, result.Raw()}, "", "    ")
		if err != nil {
			fail(err)
		}
		fmt.Println(string(out))
	case "del":
		if err := cni.Remove(ctx, *id, netns, opts...); err != nil {
			fail(err)
		}
	case "check":
		if err := cni.Check(ctx, *id, netns, opts...); err != nil {
			fail(err)
		}
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Println(err.Error())
	fmt.Fprintln(os.Stderr, err.Error())
	os.Exit(1)
}
