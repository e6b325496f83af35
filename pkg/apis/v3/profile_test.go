package v3

import "testing"

func TestProfileValidation(t *testing.T) {
	doc := func(spec string) string {
		return "apiVersion: projectcalico.org/v3\nkind: Profile\nmetadata:\n  name: kns.prod\nspec:\n" + spec
	}
	runValidationCases(t, []validationCase{
		{name: "good", doc: doc("  ingress:\n  - action: Allow\n    source: {nets: [10.65.0.0/16]}\n  egress:\n  - action: Allow\n    http: {methods: [GET]}\n  labelsToApply:\n    team: blue\n    example.com/tier: web\n")},
		{name: "bad labels", doc: doc("  labelsToApply:\n    'bad key': x\n    ok: 'bad value!'\n"),
			errs: []want{{"spec.labelsToApply[bad key]", "invalid label key"}, {"spec.labelsToApply[ok]", "invalid label value"}}},
		{name: "bad rules", doc: doc("  ingress:\n  - action: Allow\n    protocol: TCP\n    destination: {ports: ['2:1']}\n  egress:\n  - {}\n"),
			errs: []want{{"spec.ingress[0].destination.ports[0]", "port range 2:1 is reversed"}, {"spec.egress[0].action", "required"}}},
	})
}
