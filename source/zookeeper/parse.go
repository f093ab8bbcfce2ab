package zookeeper

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/discotech/disco/catalog"
	"github.com/discotech/disco/source"
)

// serviceInstance is the part of Curator's ServiceInstance, as its
// JsonInstanceSerializer writes it, that the source uses. Other fields
// (registrationTimeUTC, serviceType, uriSpec) are ignored, and so is "name"
// and "id": the znode's path says which service and instance it is.
type serviceInstance struct {
	Address string `json:"address"`
	// Port and SSLPort are both optional in Curator; the plain port wins
	// when both are set.
	Port    *int            `json:"port"`
	SSLPort *int            `json:"sslPort"`
	Payload json.RawMessage `json:"payload"`
	// Enabled is absent in what Curator before 2.9 (CURATOR-275) wrote,
	// and in its compatible serialization mode: absent means enabled.
	Enabled *bool `json:"enabled"`
}

// disabledOutput is the Output of an instance Curator marks disabled.
const disabledOutput = `disabled in ZooKeeper ("enabled": false)`

// parse makes the instance that znode child of service holds. It fails on
// data that is not a ServiceInstance or describes no usable instance.
func parse(service, child string, data []byte) (*catalog.Instance, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return nil, errors.New("the data is not a JSON object (Curator's ServiceInstance)")
	}
	var si serviceInstance
	if err := json.Unmarshal(data, &si); err != nil {
		return nil, fmt.Errorf("the data is not Curator's ServiceInstance: %w", err)
	}
	in := &catalog.Instance{
		Service: service,
		ID:      catalog.Label(child),
		Address: si.Address,
		Meta:    payloadMeta(si.Payload),
		Weight:  catalog.DefaultWeight,
	}
	switch {
	case si.Port != nil:
		in.Port = *si.Port
	case si.SSLPort != nil:
		in.Port = *si.SSLPort
	default:
		return nil, errors.New("no port: both port and sslPort are null")
	}
	if si.Enabled != nil && !*si.Enabled {
		in.Status, in.Output = catalog.Critical, disabledOutput
	}
	if err := source.Normalize(in); err != nil {
		return nil, err
	}
	return in, nil
}

// payloadMeta takes meta from a payload that is a JSON object: the string
// values of its "metadata" object when it has one (Spring Cloud Zookeeper's
// ZookeeperInstance), else its own string values. Keys starting with '@'
// (Jackson's "@class") and pairs the catalog would refuse are left out.
// Anything else (null, a string, an array) gives no meta.
func payloadMeta(payload json.RawMessage) map[string]string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(payload, &obj) != nil {
		return nil
	}
	if md, ok := obj["metadata"]; ok {
		obj = nil
		if json.Unmarshal(md, &obj) != nil {
			return nil
		}
	}
	meta := map[string]string{}
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		var v string
		if strings.HasPrefix(k, "@") || json.Unmarshal(obj[k], &v) != nil {
			continue
		}
		if len(meta) == catalog.MaxMetaPairs {
			break
		}
		// The catalog's rules decide, on an instance holding just this pair.
		probe := catalog.Instance{Service: "x", ID: "x", Address: "127.0.0.1", Port: 1, Weight: 1, Meta: map[string]string{k: v}}
		if source.Normalize(&probe) == nil {
			meta[k] = v
		}
	}
	if len(meta) == 0 {
		return nil
	}
	return meta
}
