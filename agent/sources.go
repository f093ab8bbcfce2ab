package agent

// Every kind of source the agent can use registers itself here by scheme.
import (
	_ "github.com/discotech/disco/source/disco"
	_ "github.com/discotech/disco/source/dnssrv"
	_ "github.com/discotech/disco/source/etcd"
	_ "github.com/discotech/disco/source/file"
	_ "github.com/discotech/disco/source/zookeeper"
)
