/**
 * The comm with the active notebook's kernel (target `refbook`, registered by
 * `%load_ext refbook`).  It follows the notebook the person looks at, opens the comm
 * again after a restart or once refbook is loaded, and tells the kernel whether the
 * sidebar is visible: a hidden sidebar costs the kernel nothing.
 */
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

export interface ISessionLike {
  session: { kernel: Kernel.IKernelConnection | null } | null;
  kernelChanged: ISignal<any, any>;
  statusChanged: ISignal<any, Kernel.Status>;
  path?: string;
  name?: string;
}

export type Status = 'no-notebook' | 'no-kernel' | 'connecting' | 'no-refbook' | 'connected';

export class Connection {
  private context: ISessionLike | null = null;
  private comm: Kernel.IComm | null = null;
  private visible = false;
  private interval = 0.25;
  private wasBusy = false;
  private _status: Status = 'no-notebook';
  private _statusChanged = new Signal<this, Status>(this);
  private _message = new Signal<this, any>(this);

  get status(): Status {
    return this._status;
  }
  get statusChanged(): ISignal<this, Status> {
    return this._statusChanged;
  }
  /** Every message the kernel sends on the comm. */
  get message(): ISignal<this, any> {
    return this._message;
  }
  get label(): string {
    return this.context?.name || this.context?.path || '';
  }

  follow(context: ISessionLike | null): void {
    if (context === this.context) {
      return;
    }
    if (this.context) {
      this.context.kernelChanged.disconnect(this.reopen, this);
      this.context.statusChanged.disconnect(this.onStatus, this);
    }
    this.context = context;
    if (context) {
      context.kernelChanged.connect(this.reopen, this);
      context.statusChanged.connect(this.onStatus, this);
    }
    this.reopen();
  }

  setVisible(visible: boolean): void {
    this.visible = visible;
    this.send({ type: 'visible', visible });
    if (visible && this._status === 'no-refbook') {
      this.reopen();
    }
  }

  setInterval(seconds: number): void {
    this.interval = seconds;
    this.send({ type: 'interval', seconds });
  }

  send(data: any): boolean {
    if (!this.comm || this.comm.isDisposed) {
      return false;
    }
    this.comm.send(data);
    return true;
  }

  dispose(): void {
    this.follow(null);
  }

  private setStatus(s: Status): void {
    if (s !== this._status) {
      this._status = s;
      this._statusChanged.emit(s);
    }
  }

  /** After a cell ran (busy, then idle), a kernel without refbook may have it now. */
  private onStatus(_: any, status: Kernel.Status): void {
    if (status === 'busy') {
      this.wasBusy = true;
    } else if (status === 'idle' && this._status === 'no-kernel') {
      this.reopen(); // the kernel has started since
    } else if (status === 'idle' && this.wasBusy) {
      this.wasBusy = false;
      if (this._status === 'no-refbook' && this.visible) {
        this.reopen();
      }
    } else if (status === 'restarting' || status === 'dead') {
      this.closeComm();
      this.setStatus('no-kernel');
    }
  }

  private closeComm(): void {
    const comm = this.comm;
    this.comm = null;
    if (comm && !comm.isDisposed) {
      try {
        comm.close();
      } catch (e) {
        // the kernel went away: nothing to close
      }
    }
  }

  private reopen(): void {
    this.closeComm();
    const kernel = this.context?.session?.kernel ?? null;
    if (!this.context) {
      this.setStatus('no-notebook');
      return;
    }
    if (!kernel) {
      this.setStatus('no-kernel');
      return;
    }
    let comm: Kernel.IComm;
    try {
      comm = kernel.createComm('refbook');
    } catch (e) {
      console.warn('refbook: cannot open a comm with the kernel', e);
      this.setStatus('no-kernel');
      return;
    }
    this.comm = comm;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      if (comm === this.comm) {
        this.setStatus('connected');
        this._message.emit(msg.content.data);
      }
    };
    comm.onClose = () => {
      if (comm === this.comm) {
        this.comm = null;
        this.setStatus('no-refbook');
      }
    };
    this.setStatus('connecting');
    comm.open({});
    comm.send({ type: 'interval', seconds: this.interval });
    comm.send({ type: 'visible', visible: this.visible });
  }
}
