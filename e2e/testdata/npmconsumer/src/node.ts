// Resolved as Node.js resolves ESM (tsconfig.node.json): the package's
// exports and .d.ts must work there too, not only in bundlers.

import { BridgeClient, Code, StatusError, subprotocol } from "@grpcbridge/client";

export const checks: [BridgeClient, number, typeof StatusError, string] = [new BridgeClient(), Code.OK, StatusError, subprotocol];
