#!/usr/bin/env node
// Validate Kubernetes manifests offline against the Kubernetes API's OpenAPI
// schemas, as shipped (compiled to validators) by the npm package
// kubernetes-models. No cluster, no network.
//
//   node tools/k8s-validate/validate.js PATH...      files or folders (*.yaml, *.yml)
//   kubectl kustomize DIR | node tools/k8s-validate/validate.js -
//
// For every YAML document:
//   1. it parses as YAML (duplicate keys are errors);
//   2. apiVersion/kind name a known API type that current Kubernetes still
//      serves (a typo, or a removed version such as policy/v1beta1, fails);
//   3. the object validates against that type's schema: types, enums,
//      required fields, formats (quantities, int-or-string, base64, ...);
//   4. strict fields: no field the schema does not define (what
//      `kubectl apply --validate=strict` rejects), e.g. `readinesProbe`;
//   5. a few checks the API server makes beyond the schema: names, label
//      syntax, Deployment selector vs template labels, port names.
// Kustomization files (kustomize.config.k8s.io) are not API objects: their
// top-level fields and the files they reference are checked instead.
//
// Prints one line per document; exits 1 if anything failed, 2 on usage error.
"use strict";

const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

// ---------------------------------------------------------------- input ---

function collectFiles(p, out) {
    const st = fs.statSync(p);
    if (st.isDirectory()) {
        for (const name of fs.readdirSync(p).sort()) {
            if (name === "node_modules" || name.startsWith(".")) continue;
            collectFiles(path.join(p, name), out);
        }
    } else if (/\.ya?ml$/.test(p)) {
        out.push(p);
    }
    return out;
}

// ------------------------------------------------------- schema lookup ---

function loadModel(apiVersion, kind) {
    if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
    if (!/^([a-z0-9.-]+\/)?v[0-9]+((alpha|beta)[0-9]+)?$/.test(apiVersion)) return null;
    if (!/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
    try {
        const mod = require(`kubernetes-models/${apiVersion}/${kind}`);
        const cls = mod[kind];
        if (typeof cls !== "function" || cls.apiVersion !== apiVersion || cls.kind !== kind)
            return null;
        return cls;
    } catch (e) {
        if (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return null;
        throw e;
    }
}

// kubernetes-models also ships API versions that current clusters no longer
// serve. From the Kubernetes deprecated API migration guide: group/version
// -> {kind or "*": release that removed it}.
const REMOVED_APIS = {
    "extensions/v1beta1": { "*": "1.22" },
    "apps/v1beta1": { "*": "1.16" },
    "apps/v1beta2": { "*": "1.16" },
    "networking.k8s.io/v1beta1": { Ingress: "1.22", IngressClass: "1.22" },
    "policy/v1beta1": { PodDisruptionBudget: "1.25", PodSecurityPolicy: "1.25" },
    "autoscaling/v2beta1": { "*": "1.25" },
    "autoscaling/v2beta2": { "*": "1.26" },
    "batch/v1beta1": { "*": "1.25" },
    "discovery.k8s.io/v1beta1": { "*": "1.25" },
    "events.k8s.io/v1beta1": { "*": "1.25" },
    "node.k8s.io/v1beta1": { "*": "1.25" },
    "rbac.authorization.k8s.io/v1beta1": { "*": "1.22" },
    "apiextensions.k8s.io/v1beta1": { "*": "1.22" },
    "apiregistration.k8s.io/v1beta1": { "*": "1.22" },
    "authentication.k8s.io/v1beta1": { "*": "1.22" },
    "authorization.k8s.io/v1beta1": { "*": "1.22" },
    "certificates.k8s.io/v1beta1": { "*": "1.22" },
    "coordination.k8s.io/v1beta1": { "*": "1.22" },
    "scheduling.k8s.io/v1beta1": { "*": "1.22" },
    "admissionregistration.k8s.io/v1beta1": {
        MutatingWebhookConfiguration: "1.22", ValidatingWebhookConfiguration: "1.22" },
    "storage.k8s.io/v1beta1": {
        CSIDriver: "1.22", CSINode: "1.22", StorageClass: "1.22", VolumeAttachment: "1.22",
        CSIStorageCapacity: "1.27" },
    "flowcontrol.apiserver.k8s.io/v1beta1": { "*": "1.26" },
    "flowcontrol.apiserver.k8s.io/v1beta2": { "*": "1.29" },
};

function removedIn(apiVersion, kind) {
    const gv = REMOVED_APIS[apiVersion];
    return gv ? gv[kind] || gv["*"] || null : null;
}

// ------------------------------------------------------- strict fields ---
// The compiled schema validators read every property their schema defines
// (`data.exec === undefined || validate(data.exec)`) and enumerate the keys
// of maps (additionalProperties). Running a validator over a Proxy that
// records those reads tells, for every object in the document, which fields
// the schema knows; a field never read is unknown to the schema.

function recorder() {
    const seen = new Map();
    function at(p) {
        const k = p.join("/");
        let s = seen.get(k);
        if (!s) {
            s = { read: new Set(), enumerated: false };
            seen.set(k, s);
        }
        return s;
    }
    function wrap(value, p) {
        if (value === null || typeof value !== "object") return value;
        const isArray = Array.isArray(value);
        return new Proxy(value, {
            get(t, prop, r) {
                const v = Reflect.get(t, prop, r);
                if (typeof prop !== "string") return v;
                if (!isArray) at(p).read.add(prop);
                if (v !== null && typeof v === "object" && Object.prototype.hasOwnProperty.call(t, prop))
                    return wrap(v, p.concat(prop));
                return v;
            },
            has(t, prop) {
                if (typeof prop === "string" && !isArray) at(p).read.add(prop);
                return Reflect.has(t, prop);
            },
            ownKeys(t) {
                at(p).enumerated = true;
                return Reflect.ownKeys(t);
            },
        });
    }
    return { seen, wrap };
}

function unknownFields(cls, doc) {
    const rec = recorder();
    try {
        cls.prototype.validate.call(rec.wrap(doc, []));
    } catch (e) {
        /* schema errors are reported by the plain validation pass */
    }
    const problems = [];
    (function walk(v, p) {
        if (Array.isArray(v)) {
            v.forEach((x, i) => walk(x, p.concat(String(i))));
            return;
        }
        if (v === null || typeof v !== "object") return;
        const s = rec.seen.get(p.join("/"));
        if (!s) return; // free-form object: the schema does not look inside
        for (const k of Object.keys(v)) {
            if (s.enumerated || s.read.has(k)) walk(v[k], p.concat(k));
            else problems.push(`/${p.concat(k).join("/")}: unknown field "${k}"`);
        }
    })(doc, []);
    return problems;
}

// ------------------------------------------------- API server checks ---

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const LABEL_NAME = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

function checkLabels(labels, where, problems) {
    for (const [k, v] of Object.entries(labels || {})) {
        const name = k.includes("/") ? k.split("/").pop() : k;
        if (!LABEL_NAME.test(k) || name.length > 63) problems.push(`${where}: invalid label key "${k}"`);
        if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v))
            problems.push(`${where}: invalid label value ${JSON.stringify(v)} for "${k}"`);
    }
}

function checkContainers(spec, where, problems) {
    for (const [i, c] of (spec.containers || []).entries()) {
        const names = new Set();
        for (const p of c.ports || []) {
            if (!(Number.isInteger(p.containerPort) && p.containerPort >= 1 && p.containerPort <= 65535))
                problems.push(`${where}/containers/${i}/ports: containerPort ${p.containerPort} is not in 1..65535`);
            if (p.name === undefined) continue;
            if (p.name.length > 15 || !PORT_NAME.test(p.name))
                problems.push(`${where}/containers/${i}/ports: invalid port name "${p.name}"`);
            if (names.has(p.name)) problems.push(`${where}/containers/${i}/ports: duplicate port name "${p.name}"`);
            names.add(p.name);
        }
        for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
            const port = c[probe] && c[probe].httpGet && c[probe].httpGet.port;
            if (typeof port === "string" && !names.has(port))
                problems.push(`${where}/containers/${i}/${probe}: port "${port}" names no container port`);
        }
        const mounts = new Set((spec.volumes || []).map((v) => v.name));
        for (const m of c.volumeMounts || [])
            if (!mounts.has(m.name))
                problems.push(`${where}/containers/${i}/volumeMounts: volume "${m.name}" not found`);
    }
}

function apiServerChecks(doc) {
    const problems = [];
    const md = doc.metadata || {};
    if (typeof md.name !== "string" || md.name === "") problems.push("/metadata/name: required");
    else if (md.name.length > 253 || !DNS1123_SUBDOMAIN.test(md.name))
        problems.push(`/metadata/name: "${md.name}" is not a DNS-1123 subdomain`);
    if (doc.kind === "Service" && typeof md.name === "string" && (!DNS1035_LABEL.test(md.name) || md.name.length > 63))
        problems.push(`/metadata/name: Service name "${md.name}" is not a DNS-1035 label`);
    if (md.namespace !== undefined && !DNS1035_LABEL.test(md.namespace))
        problems.push(`/metadata/namespace: invalid "${md.namespace}"`);
    checkLabels(md.labels, "/metadata/labels", problems);

    const spec = doc.spec || {};
    if (["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"].includes(doc.kind)) {
        const tmplLabels = (spec.template && spec.template.metadata && spec.template.metadata.labels) || {};
        checkLabels(tmplLabels, "/spec/template/metadata/labels", problems);
        const sel = (spec.selector && spec.selector.matchLabels) || {};
        if (Object.keys(sel).length === 0 && !(spec.selector && spec.selector.matchExpressions))
            problems.push("/spec/selector: empty selector");
        for (const [k, v] of Object.entries(sel))
            if (tmplLabels[k] !== v)
                problems.push(`/spec/selector: "${k}: ${v}" does not match the template labels`);
        if (spec.template && spec.template.spec) checkContainers(spec.template.spec, "/spec/template/spec", problems);
    }
    if (doc.kind === "Service") {
        for (const [i, p] of (spec.ports || []).entries()) {
            if (!(Number.isInteger(p.port) && p.port >= 1 && p.port <= 65535))
                problems.push(`/spec/ports/${i}/port: ${p.port} is not in 1..65535`);
            if (typeof p.targetPort === "string" && (p.targetPort.length > 15 || !PORT_NAME.test(p.targetPort)))
                problems.push(`/spec/ports/${i}/targetPort: invalid port name "${p.targetPort}"`);
        }
        if ((spec.ports || []).length > 1 && spec.ports.some((p) => !p.name))
            problems.push("/spec/ports: every port needs a name when there are several");
    }
    if (doc.kind === "PodDisruptionBudget" && spec.minAvailable !== undefined && spec.maxUnavailable !== undefined)
        problems.push("/spec: minAvailable and maxUnavailable are mutually exclusive");
    if (doc.kind === "HorizontalPodAutoscaler" && spec.minReplicas > spec.maxReplicas)
        problems.push("/spec: minReplicas above maxReplicas");
    return problems;
}

// ------------------------------------------------------- kustomization ---

const KUSTOMIZATION_FIELDS = new Set([
    "apiVersion", "kind", "metadata", "resources", "components", "namespace", "namePrefix", "nameSuffix",
    "labels", "commonLabels", "commonAnnotations", "patches", "patchesStrategicMerge", "patchesJson6902",
    "images", "replicas", "configMapGenerator", "secretGenerator", "generatorOptions", "replacements",
    "crds", "generators", "transformers", "validators", "openapi", "buildMetadata", "helmCharts",
    "sortOptions", "vars", "configurations",
]);

function checkKustomization(doc, file) {
    const problems = [];
    if (doc.kind !== "Kustomization") problems.push(`/kind: expected Kustomization, got ${doc.kind}`);
    for (const k of Object.keys(doc))
        if (!KUSTOMIZATION_FIELDS.has(k)) problems.push(`/${k}: unknown Kustomization field`);
    if (file) {
        const dir = path.dirname(file);
        for (const r of doc.resources || [])
            if (!fs.existsSync(path.join(dir, r))) problems.push(`/resources: "${r}" not found`);
        for (const p of doc.patches || [])
            if (p.path && !fs.existsSync(path.join(dir, p.path))) problems.push(`/patches: "${p.path}" not found`);
    }
    return problems;
}

// ----------------------------------------------------------------- main ---

function validateDocument(doc, file) {
    if (doc === null || typeof doc !== "object" || Array.isArray(doc))
        return { label: "?", problems: ["document is not a mapping"] };
    const label = `${doc.kind || "?"}/${(doc.metadata && doc.metadata.name) || "?"}`;
    if (typeof doc.apiVersion === "string" && doc.apiVersion.startsWith("kustomize.config.k8s.io/"))
        return { label, problems: checkKustomization(doc, file) };
    const removed = removedIn(doc.apiVersion, doc.kind);
    if (removed)
        return { label, problems: [`${doc.apiVersion} ${doc.kind} was removed in Kubernetes ${removed}`] };
    const cls = loadModel(doc.apiVersion, doc.kind);
    if (!cls)
        return { label, problems: [`unknown apiVersion/kind: ${doc.apiVersion} ${doc.kind}`] };
    const problems = [];
    try {
        new cls(doc).validate();
    } catch (e) {
        problems.push(`schema: ${e.message}`);
    }
    if (problems.length === 0) problems.push(...unknownFields(cls, doc));
    problems.push(...apiServerChecks(doc));
    return { label, problems };
}

function validateText(text, name, file) {
    const results = [];
    const docs = YAML.parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false });
    docs.forEach((d, i) => {
        const where = `${name}#${i}`;
        if (d.errors && d.errors.length) {
            results.push({ where, label: "?", problems: d.errors.map((e) => `yaml: ${e.message}`) });
            return;
        }
        const doc = d.toJS({ maxAliasCount: 100 });
        if (doc === null || doc === undefined) return; // empty document
        const r = validateDocument(doc, file);
        results.push({ where, ...r });
    });
    return results;
}

function main(argv) {
    if (argv.length === 0) {
        process.stderr.write("usage: validate.js PATH... | -\n");
        return 2;
    }
    let results = [];
    for (const arg of argv) {
        if (arg === "-") {
            results = results.concat(validateText(fs.readFileSync(0, "utf8"), "<stdin>", null));
            continue;
        }
        if (!fs.existsSync(arg)) {
            results.push({ where: arg, label: "?", problems: ["no such file or folder"] });
            continue;
        }
        for (const f of collectFiles(arg, []))
            results = results.concat(validateText(fs.readFileSync(f, "utf8"), f, f));
    }
    let bad = 0;
    for (const r of results) {
        if (r.problems.length === 0) {
            process.stdout.write(`ok    ${r.where} ${r.label}\n`);
        } else {
            bad++;
            for (const p of r.problems) process.stdout.write(`FAIL  ${r.where} ${r.label}: ${p}\n`);
        }
    }
    if (results.length === 0) {
        process.stdout.write("FAIL  no YAML documents found\n");
        return 1;
    }
    process.stdout.write(`${results.length - bad} valid, ${bad} invalid\n`);
    return bad ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
