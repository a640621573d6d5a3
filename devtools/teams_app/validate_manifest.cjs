// Validates a Teams app manifest.json with Microsoft's own tooling (@microsoft/app-manifest),
// offline: the schema is read from the package's bundled copy, never fetched.
//
//   node devtools/teams_app/validate_manifest.cjs <manifest.json>
//
// Prints one JSON object on stdout: {"manifestVersion": ..., "schema": <bundled schema>, "errors": [...]}.
// Exit code 0 when the manifest is valid, 1 when it is not, 2 when it cannot be checked at all
// (unreadable file, or a $schema this package does not bundle).
"use strict";

const fs = require("fs");
const path = require("path");
const { AppManifestUtils, TeamsManifestConverter } = require("@microsoft/app-manifest");

const SCHEMA_PREFIX = "https://developer.microsoft.com/json-schemas/teams/";
const PACKAGE_ROOT = path.dirname(require.resolve("@microsoft/app-manifest/package.json"));
const PACKAGE_VERSION = require("@microsoft/app-manifest/package.json").version;
const SCHEMAS = path.join(PACKAGE_ROOT, "build", "json-schemas");

function report(result, code) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

function bundledSchemaPath(schemaUrl) {
  // Same mapping as the package's own loader, without its fallback to the network.
  if (typeof schemaUrl !== "string" || !schemaUrl.startsWith(SCHEMA_PREFIX)) {
    return null;
  }
  const candidate = path.join(SCHEMAS, "teams", schemaUrl.slice(SCHEMA_PREFIX.length));
  return fs.existsSync(candidate) ? candidate : null;
}

async function main() {
  const manifestPath = process.argv[2];
  if (!manifestPath) {
    report({ errors: ["usage: validate_manifest.cjs <manifest.json>"] }, 2);
  }
  let text;
  let manifest;
  try {
    text = fs.readFileSync(manifestPath, "utf8");
    manifest = JSON.parse(text);
  } catch (error) {
    report({ errors: [`cannot read ${manifestPath}: ${error.message}`] }, 2);
  }
  const schemaPath = bundledSchemaPath(manifest.$schema);
  if (!schemaPath) {
    report(
      { errors: [`$schema ${JSON.stringify(manifest.$schema)} is not a Teams schema that @microsoft/app-manifest bundles`] },
      2,
    );
  }
  const schema = JSON.parse(fs.readFileSync(schemaPath, "utf8"));
  const errors = [];
  try {
    // Runtime type check of the package's converters (throws on a mistyped manifest).
    TeamsManifestConverter.jsonToManifest(text);
  } catch (error) {
    errors.push(`type check: ${error.message}`);
  }
  errors.push(...(await AppManifestUtils.validateAgainstSchema(manifest, schema)));
  const result = {
    manifestVersion: manifest.manifestVersion,
    schema: `${path.relative(SCHEMAS, schemaPath)} (@microsoft/app-manifest ${PACKAGE_VERSION})`,
    errors,
  };
  report(result, errors.length === 0 ? 0 : 1);
}

main().catch((error) => report({ errors: [`validator failed: ${error.stack || error}`] }, 2));
