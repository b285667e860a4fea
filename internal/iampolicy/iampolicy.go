// Package iampolicy builds IAM policy documents as Go values marshalled to JSON, never as
// concatenated strings.
package iampolicy

import "encoding/json"

// Statement is one statement of a policy document.
type Statement map[string]any

// Document marshals a policy document with the current policy language version.
func Document(statements ...Statement) string {
	b, err := json.Marshal(map[string]any{"Version": "2012-10-17", "Statement": statements})
	if err != nil {
		// Statements hold strings, lists and maps of them only.
		panic("iampolicy: " + err.Error())
	}
	return string(b)
}

// AssumeRole is the trust policy that lets an AWS service assume a role, optionally under a
// condition such as {"StringEquals": {"aws:SourceAccount": "123456789012"}}.
func AssumeRole(service string, condition map[string]any) string {
	s := Statement{
		"Effect":    "Allow",
		"Principal": map[string]any{"Service": service},
		"Action":    "sts:AssumeRole",
	}
	if condition != nil {
		s["Condition"] = condition
	}
	return Document(s)
}
