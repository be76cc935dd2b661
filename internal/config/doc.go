// Package config loads the Kubernetes and Istio YAML that users already
// write into one immutable, validated Snapshot that the sidecar consults
// for listeners, routes, clusters and traffic policy.
//
// Input is one or more files or directories (every *.yaml and *.yml file
// in a directory, sorted), each holding one or more "---"-separated
// documents. wsmesh reads these kinds and ignores every other kind with a
// warning:
//
//   - v1 Service, discovery.k8s.io/v1 EndpointSlice: services, ports,
//     Istio protocol selection (appProtocol, then the port-name prefix),
//     endpoints.
//   - networking.istio.io WorkloadEntry and ServiceEntry: workloads outside
//     Kubernetes and external hosts; a Service's selector picks
//     WorkloadEntries in its namespace as endpoints.
//   - v1 Pod, apps/v1 Deployment, WorkloadEntry: workload identity.
//   - networking.istio.io Sidecar: the explicit listeners of local mode
//     (ingress: where peers connect and the local application's
//     defaultEndpoint; egress: where the application connects out).
//   - networking.istio.io DestinationRule: connection pool, h2UpgradePolicy
//     and load balancer, with portLevelSettings.
//   - networking.istio.io EnvoyFilter: the patch that sets the inbound HTTP
//     connection manager's http2_protocol_options.allow_connect (RFC 8441
//     WebSocket over HTTP/2); other patches are kept and reported as not
//     applied.
//   - v1 ConfigMap istio-system/istio: MeshConfig from data.mesh
//     (h2UpgradePolicy, connectTimeout, rootNamespace).
//
// Every problem is reported, not just the first: errors are *FieldError
// values joined with errors.Join, each naming file, document (1-based),
// kind and name, field path and reason. Unknown fields are warnings
// (Snapshot.Warnings), wrong types in fields wsmesh reads are errors.
package config
