package config

import (
	"strings"
	"testing"
)

const objSvc = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: http, port: 8080, targetPort: 80}]
  selector: {app: web}
`

const objRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: %s}}}
`

func rule(policy string) []byte { return []byte(strings.Replace(objRule, "%s", policy, 1)) }

func TestParseDocumentsSameAsOneFile(t *testing.T) {
	docs := []Document{
		{Name: ObjectDocumentName("kubernetes", "Service", "default", "web"), Data: []byte(objSvc)},
		{Name: ObjectDocumentName("kubernetes", "DestinationRule", "default", "web"), Data: rule("UPGRADE")},
	}
	if docs[0].Name != "kubernetes:Service/default/web" {
		t.Errorf("name %q", docs[0].Name)
	}
	a, err := ParseDocuments(docs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("all.yaml", []byte(objSvc+"---\n"+string(rule("UPGRADE"))))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := a.Route(8080, "web")
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := b.Route(8080, "web")
	if ca.Policy.H2Upgrade != true || ca.Policy.H2Upgrade != cb.Policy.H2Upgrade || ca.Name != cb.Name {
		t.Errorf("documents %+v, one file %+v", ca, cb)
	}
	if got := a.Files(); len(got) != 2 || got[1] != docs[1].Name {
		t.Errorf("files %v", got)
	}
}

func TestParseDocumentsSkipping(t *testing.T) {
	svc := Document{Name: "kubernetes:Service/default/web", Data: []byte(objSvc)}
	badSvc := Document{Name: "kubernetes:Service/default/bad", Data: []byte(strings.Replace(strings.Replace(objSvc, "web", "bad", 1), "targetPort: 80", "targetPort: -3", 1))}
	dr := Document{Name: "kubernetes:DestinationRule/default/web", Data: rule("UPGRAED")}

	// No fallback: both bad documents are left out.
	snap, rejected, err := ParseDocumentsSkipping([]Document{badSvc, dr, svc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rejected) != 2 || rejected[badSvc.Name] == nil || rejected[dr.Name] == nil {
		t.Fatalf("rejected %v", rejected)
	}
	if msg := rejected[dr.Name].Error(); !strings.Contains(msg, dr.Name+": document 1 (DestinationRule web): spec.trafficPolicy") {
		t.Errorf("message %q", msg)
	}
	c, err := snap.Route(8080, "web")
	if err != nil || c.Policy.H2Upgrade {
		t.Fatalf("route %+v %v", c, err)
	}
	if _, err := snap.Route(8080, "bad"); err == nil {
		t.Errorf("the invalid Service is routed")
	}

	// With the accepted version of the rule as fallback, that one stays.
	snap, rejected, err = ParseDocumentsSkipping([]Document{dr, svc}, map[string][]byte{dr.Name: rule("UPGRADE")})
	if err != nil {
		t.Fatal(err)
	}
	if rejected[dr.Name] == nil {
		t.Errorf("the invalid version is not reported")
	}
	if c, _ := snap.Route(8080, "web"); !c.Policy.H2Upgrade {
		t.Errorf("fallback version not used: %+v", c.Policy)
	}

	// All valid: nothing rejected.
	if _, rejected, err := ParseDocumentsSkipping([]Document{svc}, nil); err != nil || rejected != nil {
		t.Errorf("rejected %v err %v", rejected, err)
	}
	// Nothing at all is a valid, empty snapshot.
	if s, _, err := ParseDocumentsSkipping(nil, nil); err != nil || s == nil {
		t.Errorf("empty: %v", err)
	}
}
