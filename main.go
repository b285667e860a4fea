// Command melody-flow is the Pulumi program of Melody Flow's production on AWS.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"

	"github.com/melody-flow/infra/stack"
)

func main() {
	pulumi.Run(stack.Program)
}
