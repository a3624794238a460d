// Compiles TicketBroker.sol into TicketBroker.json (ABI and bytecode of each contract) with the
// npm `solc` package: `npm install solc@0.8.28 && node compile.mjs` (see build.sh).
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(process.env.SOLC_MODULE_DIR ? join(process.env.SOLC_MODULE_DIR, "x.js") : import.meta.url);
const solc = require("solc");
const here = dirname(fileURLToPath(import.meta.url));
const input = {
  language: "Solidity",
  sources: { "TicketBroker.sol": { content: readFileSync(join(here, "TicketBroker.sol"), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "shanghai",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
const contracts = {};
for (const [name, c] of Object.entries(output.contracts["TicketBroker.sol"])) {
  contracts[name] = { abi: c.abi, bytecode: "0x" + c.evm.bytecode.object };
}
const artifact = { compiler: `solc ${solc.version()}`, evmVersion: "shanghai", optimizerRuns: 200, contracts };
writeFileSync(join(here, "TicketBroker.json"), JSON.stringify(artifact, null, 1) + "\n");
console.log(`wrote TicketBroker.json (${Object.keys(contracts).join(", ")}) with solc ${solc.version()}`);
