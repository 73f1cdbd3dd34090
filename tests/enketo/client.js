// Enketo on huikan: opens one of huikan's OpenRosa forms with Enketo's own form engine
// (enketo-core) after Enketo's own XSL transformation (enketo-transformer), the way Enketo
// Express serves a form, and submits the record the way Enketo Express does. The tests drive
// it in headless Chromium (tests/tests/api/enketo.rs) through `window.enketo`.
//
// Enketo Express itself is a Node server with Redis that is not published as a package; what it
// adds around enketo-core is the OpenRosa side, written here from its behaviour: the form list,
// form and manifest with `X-OpenRosa-Version`, CSV media turned into secondary instances
// (`<root><item><column>…`), the maximum size from `HEAD …/submission`, and the record sent
// as multipart batches that each carry the whole instance and as many files as fit, none marked
// incomplete, one after the other.

import { Form } from 'enketo-core';
import fileManager from 'enketo-core/src/js/file-manager';
import { transform } from 'enketo-transformer/web';
import Papa from 'papaparse';

const parser = new DOMParser();
const state = {};

function basic(username, password) {
    const bytes = new TextEncoder().encode(`${username}:${password}`);
    return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

async function request(url, init = {}) {
    const response = await fetch(url, {
        ...init,
        cache: 'no-cache',
        headers: {
            'X-OpenRosa-Version': '1.0',
            Authorization: state.authorization,
            ...(init.headers || {}),
        },
    });
    return response;
}

async function text(url) {
    const response = await request(url);
    if (!response.ok) {
        throw new Error(`GET ${url}: ${response.status} ${await response.text()}`);
    }
    return response.text();
}

function xml(str) {
    return parser.parseFromString(str, 'text/xml');
}

// A CSV media file as the secondary instance Enketo and JavaRosa make of it.
function csvToInstance(csv) {
    const { data, errors } = Papa.parse(csv.replace(/^\uFEFF/, ''), {
        header: true,
        skipEmptyLines: true,
    });
    if (errors.length) {
        throw new Error(`CSV: ${errors[0].message} (row ${errors[0].row})`);
    }
    const doc = document.implementation.createDocument(null, 'root', null);
    for (const row of data) {
        const item = doc.createElement('item');
        for (const [column, value] of Object.entries(row)) {
            const cell = doc.createElement(column);
            cell.textContent = value;
            item.appendChild(cell);
        }
        doc.documentElement.appendChild(item);
    }
    return doc;
}

// Signs in, downloads form `formId` with its media, transforms and renders it. Resolves with
// the form's load errors (none when it opened cleanly).
async function open({ server, username, password, formId, instanceStr, deviceId }) {
    Object.assign(state, { server, authorization: basic(username, password) });
    const list = xml(await text(`${server}/formList?formID=${encodeURIComponent(formId)}`));
    const entry = [...list.querySelectorAll('xform')].find(
        (x) => x.querySelector('formID')?.textContent === formId
    );
    if (!entry) {
        throw new Error(`form ${formId} is not in the form list`);
    }
    const xform = await text(entry.querySelector('downloadUrl').textContent);
    const manifest = xml(await text(entry.querySelector('manifestUrl').textContent));
    const media = {};
    for (const file of manifest.querySelectorAll('mediaFile')) {
        const name = file.querySelector('filename').textContent;
        media[name] = await text(file.querySelector('downloadUrl').textContent);
    }

    const survey = await transform({ xform, media: {} });
    const model = xml(survey.model);
    const external = [...model.querySelectorAll('instance[id][src]')].map((instance) => {
        const name = instance.getAttribute('src').replace(/.*\//, '');
        if (!(name in media)) {
            throw new Error(`the manifest has no ${name}`);
        }
        return { id: instance.id, src: instance.getAttribute('src'), xml: csvToInstance(media[name]) };
    });

    const container = document.querySelector('#form');
    container.innerHTML = survey.form;
    state.form = new Form(
        container.querySelector('form.or'),
        {
            modelStr: survey.model,
            instanceStr: instanceStr || null,
            submitted: Boolean(instanceStr),
            external,
            session: { deviceid: deviceId || 'enketo:huikan-test' },
        },
        {}
    );
    const errors = state.form.init();
    document.querySelector('#status').textContent = errors.length ? errors.join('; ') : 'ready';
    return errors;
}

// Enketo Express's split of files into batches: each batch as many files as stay under the
// limit, in order; a file at or over the limit alone.
function batches(sizes, limit) {
    const left = sizes.map((size, index) => ({ index, size }));
    const out = [];
    while (left.length) {
        const batch = [left[0]];
        let total = left[0].size;
        if (left[0].size < limit) {
            for (const file of left.slice(1)) {
                if (total + file.size < limit) {
                    batch.push(file);
                    total += file.size;
                }
            }
        }
        out.push(batch.map((f) => f.index));
        for (const file of batch) {
            left.splice(left.indexOf(file), 1);
        }
    }
    return out;
}

// Validates the form and submits its record. Resolves with `{ valid, invalid }` for a form that
// does not validate, else `{ valid, record, instanceId, deprecatedId, maxSize, responses }`,
// one response (status and OpenRosaResponse message) per batch; stops at the first failure.
async function submit({ maxSize } = {}) {
    const { form, server } = state;
    const valid = await form.validate();
    if (!valid) {
        const invalid = [...document.querySelectorAll('.invalid-required, .invalid-constraint')]
            .map((q) => q.querySelector('[name]')?.getAttribute('name'));
        return { valid, invalid };
    }
    const record = form.getDataStr();
    const files = fileManager.getCurrentFiles();
    const probe = await request(`${server}/submission`, { method: 'HEAD' });
    if (probe.status !== 204) {
        throw new Error(`HEAD ${server}/submission: ${probe.status}`);
    }
    const limit = maxSize || Number(probe.headers.get('X-OpenRosa-Accept-Content-Length'));
    const doc = xml(record);
    const named = [...doc.querySelectorAll('[type="file"]')].map((el) => {
        el.removeAttribute('type');
        return el.textContent;
    });
    const instance = new Blob([new XMLSerializer().serializeToString(doc.documentElement)], {
        type: 'text/xml',
    });
    const sent = named.map((name) => files.find((f) => f.name === name)).filter(Boolean);
    const plan = sent.length ? batches(sent.map((f) => f.size), limit) : [[]];
    const responses = [];
    for (const batch of plan) {
        const body = new FormData();
        body.append('xml_submission_file', instance, 'xml_submission_file');
        for (const index of batch) {
            body.append(sent[index].name, sent[index], sent[index].name);
        }
        const headers = { 'X-OpenRosa-Instance-Id': form.instanceID };
        if (form.deprecatedID) {
            headers['X-OpenRosa-Deprecated-Id'] = form.deprecatedID;
        }
        const response = await request(`${server}/submission`, { method: 'POST', headers, body });
        const answer = await response.text();
        const message = xml(answer).querySelector('OpenRosaResponse > message');
        responses.push({ status: response.status, message: message ? message.textContent : answer });
        if (response.status !== 201 && response.status !== 202) {
            break;
        }
    }
    document.querySelector('#status').textContent = `submitted: ${responses.map((r) => r.status).join(', ')}`;
    return {
        valid,
        record,
        instanceId: form.instanceID,
        deprecatedId: form.deprecatedID || null,
        files: sent.map((f) => ({ name: f.name, size: f.size })),
        maxSize: limit,
        responses,
    };
}

window.enketo = { open, submit };
