/**
 * The left sidebar panel "refbook" (DOM id `refbook-sidebar`): the active notebook's
 * refs (a virtualised list: only the rows in view exist in the DOM), the nodes with
 * memory bars, the actors, the clusters on this host, and the details of a clicked ref
 * (its lineage and why it is alive) with a "Free" button.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import { Connection, Status } from './connection';
import { fmtBytes, NodeRow, RefRow, SidebarModel } from './model';

const ROW = 24; // px: every ref row has this height (virtualised list)
const FREE_ANSWER_S = 5; // seconds before the sidebar says the kernel has not answered
const HINTS: { [s in Status]: string } = {
  'no-notebook': 'Open a notebook to see its refs.',
  'no-kernel': 'This notebook has no running kernel.',
  connecting: 'Asking the kernel...',
  'no-refbook': 'No refbook cluster in this kernel: run %load_ext refbook in a cell.',
  connected: ''
};

function el(tag: string, cls?: string, text?: string): HTMLElement {
  const e = document.createElement(tag);
  if (cls) {
    e.className = cls;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

export class RefbookSidebar extends Widget {
  readonly model = new SidebarModel();
  private head = el('div', 'refbook-head');
  private hint = el('div', 'refbook-hint');
  private refsTitle = el('div', 'refbook-section-title');
  private scroller = el('div', 'refbook-refs');
  private spacer = el('div', 'refbook-spacer');
  private rows = el('div', 'refbook-rows');
  private details = el('div', 'refbook-details');
  private nodesBox = el('div', 'refbook-nodes');
  private actorsBox = el('div', 'refbook-actors');
  private clustersBox = el('div', 'refbook-clusters');
  private selected: string | null = null;
  private sorted: RefRow[] = [];
  private pending = false;

  constructor(
    readonly conn: Connection,
    private fetchClusters: () => Promise<any[]>,
    private openDashboard: (code?: string) => void
  ) {
    super();
    this.id = 'refbook-sidebar';
    this.addClass('refbook-sidebar');
    this.title.caption = 'refbook: refs, nodes and actors of this notebook';
    this.scroller.appendChild(this.spacer);
    this.spacer.appendChild(this.rows);
    const dash = el('button', 'jp-Button refbook-open-dashboard', 'Dashboard');
    dash.title = "Open this notebook's dashboard (graph, memory, spilling, recovery) in a panel";
    dash.addEventListener('click', () => this.openDashboard());
    const top = el('div', 'refbook-top');
    top.append(this.head, dash);
    const n = this.node;
    n.append(
      top,
      this.hint,
      this.refsTitle,
      this.scroller,
      this.details,
      el('div', 'refbook-section-title', 'Nodes'),
      this.nodesBox,
      el('div', 'refbook-section-title', 'Actors'),
      this.actorsBox,
      el('div', 'refbook-section-title', 'Clusters on this host'),
      this.clustersBox
    );
    this.scroller.addEventListener('scroll', () => this.renderRows());
    conn.message.connect((_, data) => this.onMessage(data));
    conn.statusChanged.connect(() => {
      if (conn.status !== 'connected') {
        this.model.clear();
        this.selected = null;
        this.details.replaceChildren();
      }
      this.schedule();
    });
    this.schedule();
  }

  protected onAfterShow(): void {
    this.conn.setVisible(true);
    this.refreshClusters();
  }

  protected onAfterHide(): void {
    this.conn.setVisible(false);
  }

  refreshClusters(): void {
    this.fetchClusters()
      .then(cs => this.renderClusters(cs))
      .catch(e => {
        this.clustersBox.textContent = `could not ask the server: ${e}`;
      });
  }

  private onMessage(data: any): void {
    if (data.type === 'delta') {
      this.model.apply(data);
      this.schedule();
    } else if (data.type === 'inspect') {
      this.renderDetails(data);
    } else if (data.type === 'freed') {
      if (this.selected === data.id) {
        this.selected = null;
        this.details.replaceChildren();
      }
    } else if (data.type === 'error') {
      this.details.replaceChildren(el('div', 'refbook-error', data.message));
    }
  }

  /** Render at the next frame, once however many deltas came. */
  private schedule(): void {
    if (this.pending) {
      return;
    }
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.render();
    });
  }

  private render(): void {
    const st = this.conn.status;
    const label = this.conn.label;
    this.head.textContent = label ? `refbook · ${label}` : 'refbook';
    let hint = HINTS[st];
    if (st === 'connected' && this.model.running === false) {
      hint = 'The refbook cluster of this kernel is shut down: run refbook.init().';
    } else if (st === 'connected' && this.model.refs.size === 0) {
      hint = 'No refs yet: x = refbook.put(value), or a %%remote cell, makes one.';
    }
    this.hint.textContent = hint;
    this.hint.style.display = hint ? '' : 'none';
    this.sorted = this.model.sortedRefs();
    this.refsTitle.textContent = `Refs (${this.sorted.length})`;
    this.spacer.style.height = `${this.sorted.length * ROW}px`;
    // as tall as its rows, up to 45% of the panel (then it scrolls)
    const room = Math.max(ROW * 4, 0.45 * (this.node.clientHeight || 800));
    this.scroller.style.height = `${Math.min(this.sorted.length * ROW, room)}px`;
    this.renderRows();
    this.renderNodes(this.model.nodes);
    this.renderActors();
  }

  private renderRows(): void {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 400;
    const first = Math.max(0, Math.floor(top / ROW) - 5);
    const last = Math.min(this.sorted.length, Math.ceil((top + height) / ROW) + 5);
    this.rows.style.transform = `translateY(${first * ROW}px)`;
    const out: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      out.push(this.refRow(this.sorted[i]));
    }
    this.rows.replaceChildren(...out);
  }

  private refRow(r: RefRow): HTMLElement {
    const row = el('div', 'refbook-ref');
    row.dataset.refbookName = r.names.join(', ');
    row.dataset.refbookState = r.state;
    row.dataset.refbookId = r.id;
    if (r.id === this.selected) {
      row.classList.add('refbook-selected');
    }
    row.title = [r.made_by && `made by ${r.made_by}`, ...r.holders, r.id]
      .filter(Boolean)
      .join('\n');
    const name = el('span', 'refbook-name', r.names.join(', ') || `(${r.short_id})`);
    const state = el('span', `refbook-state refbook-state-${r.state}`, r.state);
    const size = el('span', 'refbook-size', fmtBytes(r.size));
    row.append(name, state, size);
    row.addEventListener('click', () => this.select(r.id));
    return row;
  }

  private select(id: string): void {
    this.selected = id;
    this.renderRows();
    const r = this.model.refs.get(id);
    this.details.replaceChildren(el('div', 'refbook-muted', 'asking the kernel...'));
    if (r) {
      this.conn.send({ type: 'inspect', id });
    }
  }

  private renderDetails(info: any): void {
    const r = this.model.refs.get(info.id);
    if (!r || info.id !== this.selected) {
      return;
    }
    const box = el('div', 'refbook-detail-box');
    box.append(el('div', 'refbook-detail-title', r.names.join(', ') || r.short_id));
    const facts: [string, string][] = [
      ['state', r.state + (r.error ? ` (${r.error})` : '')],
      ['size', fmtBytes(r.size)],
      ['made by', r.made_by || '?'],
      ['owner', r.owner],
      ['on node', r.node || '-'],
      ['id', r.short_id]
    ];
    for (const [k, v] of facts) {
      const line = el('div', 'refbook-fact');
      line.append(el('span', 'refbook-fact-key', k), el('span', '', v));
      box.append(line);
    }
    box.append(el('div', 'refbook-subtitle', 'Why it is alive'));
    const paths: any[] = info.why_alive || [];
    if (!paths.length) {
      box.append(el('div', 'refbook-muted', 'nothing holds it: it is being freed'));
    }
    for (const p of paths) {
      box.append(el('div', 'refbook-path', p.map(stepText).join(' → ')));
    }
    const lin = info.lineage;
    if (lin) {
      const tasks = lin.nodes.filter((n: any) => n.kind === 'task');
      box.append(el('div', 'refbook-subtitle', 'Lineage'));
      box.append(
        el(
          'div',
          'refbook-muted',
          tasks.length
            ? `made by ${tasks.map((t: any) => t.name).join(', ')}` +
                ` (${lin.nodes.length} objects and tasks, ${lin.edges.length} edges)`
            : 'a put: no task made it'
        )
      );
    }
    if (r.names.length) {
      const graph = el('button', 'jp-Button refbook-graph', 'Graph');
      graph.title = 'Open the object graph of this ref and its lineage in a panel';
      graph.addEventListener('click', () =>
        this.openDashboard(`%refbook graph ${r.names[0]}`)
      );
      box.append(graph);
    }
    const free = el('button', 'jp-Button refbook-free', 'Free');
    free.title = 'Delete the notebook variables that hold this ref';
    free.addEventListener('click', () => this.confirmFree(r));
    box.append(free);
    this.details.replaceChildren(box);
  }

  private async confirmFree(r: RefRow): Promise<void> {
    const names = r.names.length ? r.names.join(', ') : 'no variable';
    const res = await showDialog({
      title: 'Free this ref?',
      body:
        `This deletes ${names} from the notebook's namespace. The value is freed ` +
        'once nothing else holds it.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Free' })]
    });
    if (!res.button.accept) {
      return;
    }
    if (!this.conn.send({ type: 'free', id: r.id })) {
      this.details.replaceChildren(
        el('div', 'refbook-error', 'Not connected to the kernel: nothing was freed.')
      );
      return;
    }
    this.details.replaceChildren(el('div', 'refbook-muted', `freeing ${names}...`));
    // the kernel answers "freed"; say so if it does not, rather than look stuck
    window.setTimeout(() => {
      if (this.selected === r.id && this.model.refs.has(r.id)) {
        this.details.replaceChildren(
          el('div', 'refbook-error',
            `The kernel has not answered in ${FREE_ANSWER_S} s (is a cell running?). ` +
            `It frees ${names} when it gets the request.`)
        );
      }
    }, FREE_ANSWER_S * 1000);
  }

  private renderNodes(nodes: NodeRow[]): void {
    const out: HTMLElement[] = [];
    for (const n of nodes) {
      const row = el('div', 'refbook-node');
      row.dataset.refbookNode = n.node_id;
      const cap = n.capacity || 1;
      const label = el(
        'div',
        'refbook-node-label',
        `${n.node_id}${n.is_head ? ' (head)' : ''}${n.alive ? '' : ' · dead'} · ` +
          `${fmtBytes(n.used)} of ${fmtBytes(n.capacity)}` +
          (n.spilled_bytes ? ` · ${fmtBytes(n.spilled_bytes)} spilled` : '') +
          ` · ${n.cpus_free ?? '?'}/${n.cpus ?? '?'} CPU free`
      );
      const bar = el('div', 'refbook-bar');
      const used = el('div', 'refbook-bar-used');
      used.style.width = `${Math.min(100, (100 * (n.used || 0)) / cap)}%`;
      bar.append(used);
      if (n.pinned) {
        const pinned = el('div', 'refbook-bar-pinned');
        pinned.style.width = `${Math.min(100, (100 * n.pinned) / cap)}%`;
        bar.append(pinned);
      }
      if (n.spill_threshold) {
        const mark = el('div', 'refbook-bar-threshold');
        mark.style.left = `${Math.min(100, (100 * n.spill_threshold) / cap)}%`;
        mark.title = 'spilling starts here';
        bar.append(mark);
      }
      row.append(label, bar);
      out.push(row);
    }
    if (!out.length) {
      out.push(el('div', 'refbook-muted', '-'));
    }
    this.nodesBox.replaceChildren(...out);
  }

  private renderActors(): void {
    const out = this.model.actors.map(a => {
      const row = el(
        'div',
        'refbook-actor',
        `${a.name || a.class_name} · ${a.state}` +
          (a.node_id ? ` · node ${a.node_id}` : '') +
          (a.pending_calls ? ` · ${a.pending_calls} calls waiting` : '')
      );
      row.dataset.refbookActor = a.actor_id;
      return row;
    });
    this.actorsBox.replaceChildren(...(out.length ? out : [el('div', 'refbook-muted', '-')]));
  }

  private renderClusters(clusters: any[]): void {
    if (!clusters.length) {
      this.clustersBox.replaceChildren(
        el('div', 'refbook-muted', 'none running (refbook start --head, or refbook.init())')
      );
      return;
    }
    this.clustersBox.replaceChildren(
      ...clusters.map(c => {
        const alive = c.nodes.filter((n: any) => n.alive).length;
        const row = el(
          'div',
          'refbook-cluster',
          `${c.kind === 'started' ? 'refbook start' : 'embedded'} · ${alive} node(s) · ` +
            c.address
        );
        row.title = c.address;
        return row;
      })
    );
  }
}

function stepText(s: any): string {
  switch (s.kind) {
    case 'variable':
      return `variable ${s.name}`;
    case 'ref':
      return `a ref in ${s.process}`;
    case 'task':
      return `pending task ${String(s.task_id).slice(0, 8)}`;
    case 'borrower':
      return `borrowed by ${s.process}`;
    case 'object':
      return `inside ${String(s.object_id).slice(0, 8)}`;
    case 'lineage':
      return `lineage of task ${String(s.task_id).slice(0, 8)}`;
    default:
      return s.kind;
  }
}
